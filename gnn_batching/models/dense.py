"""Dense per-graph forms of MPEU and SchNet: an n x n neighbourhood instead of gather/scatter.

With ONE graph per call (``batching.method: autobatch``, where the model runs under ``jax.vmap``
over graphs of one shape bucket), message passing can use dense (n, n) tensors: the edge list
is scattered once into an adjacency count ``A[s, r]`` and a distance matrix ``D[s, r]``, then
every step is dense elementwise work and a masked reduction over senders, which accelerators
run without scatter contention. Cost grows with n^2 rather than with the edge count, so it
suits fully connected molecules (QM9: edges = n (n - 1)), not sparse kNN crystals.

The modules use the SAME parameter names as their sparse twins (``models/mpnn.py``): one set of
parameters gives the same predictions in either form (tested). Edges that repeat a (sender,
receiver) pair with different features cannot be represented (periodic images in small cells);
:func:`~gnn_batching.data.store.has_repeated_pairs` finds them and the run refuses the dense form.
Padding edges (all between padding nodes, zero features) are counted in ``A`` exactly as the
sparse mean counts them, so padding behaves identically.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from gnn_batching.models.common import MLP, gaussian_rbf, graph_mean_readout, one_hot_species
from gnn_batching.models.mpnn import _MessagePassing
from gnn_batching.plugins import register_model


def dense_neighbourhood(graph: jraph.GraphsTuple) -> tuple[jax.Array, jax.Array]:
    """Adjacency counts ``A`` (n, n) (edges s -> r) and distances ``D`` (n, n) from the edge list."""
    n = graph.nodes.shape[0]
    s, r = graph.senders, graph.receivers
    a = jnp.zeros((n, n), jnp.float32).at[s, r].add(1.0)
    d = jnp.zeros((n, n), graph.edges.dtype).at[s, r].set(graph.edges[:, 3])
    return a, d


def _mean_over_senders(a: jax.Array, m: jax.Array) -> jax.Array:
    """(n, n) counts and (n, n, C) messages s -> r: the mean message into each receiver, (n, C)."""
    total = jnp.einsum("sr,src->rc", a, m)
    return total / jnp.maximum(a.sum(axis=0), 1.0)[:, None]


class _Dense(_MessagePassing):
    def embed_dense(self, graph: jraph.GraphsTuple):
        """Node states (n, C), adjacency counts (n, n) and the RBF expansion of D, (n, n, n_rbf)."""
        h = nn.Dense(self.latent_size, use_bias=False, name="embed")(one_hot_species(graph, self.n_species))
        a, d = dense_neighbourhood(graph)
        n = d.shape[0]
        return h, a, gaussian_rbf(d.reshape(-1), self.n_rbf).reshape(n, n, self.n_rbf)


@register_model("schnet", form="dense")
class DenseSchNet(_Dense):
    """SchNet (``models.mpnn.SchNet``) on one graph with dense (n, n) messages."""

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple):
        """Per-graph predictions in standardised units, shape ``(n_graph,)`` (padding graph included)."""
        c = self.latent_size
        h, a, rbf = self.embed_dense(graph)
        for t in range(self.message_passing_steps):
            filt = MLP([c, c], activate_final=True, name=f"filter_{t}")(rbf)  # (s, r, C)
            m = filt * nn.Dense(c, use_bias=False, name=f"sender_{t}")(h)[:, None, :]
            h = h + MLP([c, c], name=f"node_update_{t}")(_mean_over_senders(a, m))
        out = MLP([c // 2, 1], name="readout")(h)
        return graph_mean_readout(out, graph)


@register_model("mpeu", form="dense")
class DenseMPEU(_Dense):
    """MPEU (``models.mpnn.MPEU``) on one graph with dense (n, n) edge states and messages."""

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple):
        """Per-graph predictions in standardised units, shape ``(n_graph,)`` (padding graph included)."""
        c = self.latent_size
        h, a, e = self.embed_dense(graph)
        n = h.shape[0]
        for t in range(self.message_passing_steps):
            hs = jnp.broadcast_to(h[:, None, :], (n, n, h.shape[-1]))
            hr = jnp.broadcast_to(h[None, :, :], (n, n, h.shape[-1]))
            e = MLP([2 * c, c], name=f"edge_update_{t}")(jnp.concatenate([hs, hr, e], axis=-1))
            m = MLP([c, c], activate_final=True, name=f"message_{t}")(e) * nn.Dense(
                c, use_bias=False, name=f"sender_{t}")(h)[:, None, :]
            h = h + MLP([c, c], name=f"node_update_{t}")(_mean_over_senders(a, m))
        out = MLP([c // 2, 1], name="readout")(h)
        return graph_mean_readout(out, graph)
