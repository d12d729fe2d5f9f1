"""MPEU and SchNet as they were written before the faster formulation (issue 37), kept as its oracle.

The models in :mod:`gnn_batching.models.mpnn` compute the same functions with the same parameters
in fewer, larger operations. These classes are the plain transcription of the study's equations
they replaced: ``jax.nn.softplus``, one MLP per interaction block on the radial basis, MPEU's edge
update on ``concat([h_s, h_r, e])``. Tests hold the fast models to them (predictions, loss and
gradients equal within float tolerance, same parameter tree), and ``bench roofline --compare
reference`` times both on the same batches. Not registered: not a model to train.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from gnn_batching.models.common import LOG2, MLP, graph_mean_readout, segment_mean
from gnn_batching.models.mpnn import _MessagePassing


def reference_shifted_softplus(x: jax.Array) -> jax.Array:
    """ssp(x) = softplus(x) - log 2 through ``jax.nn.softplus`` (its own derivative rule)."""
    return jax.nn.softplus(x) - LOG2


class ReferenceMPEU(_MessagePassing):
    """MPEU (``models.mpnn.MPEU``) in its plain form: the edge MLP on ``concat([h[s], h[r], e])``."""

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple):
        """Per-graph predictions in standardised units, shape ``(n_graph,)``."""
        c, n = self.latent_size, graph.nodes.shape[0]
        act = reference_shifted_softplus
        h, e = self.embed(graph)
        s, r = graph.senders, graph.receivers
        for t in range(self.message_passing_steps):
            e = MLP([2 * c, c], activation=act, name=f"edge_update_{t}")(jnp.concatenate([h[s], h[r], e], axis=-1))
            m = MLP([c, c], activation=act, activate_final=True, name=f"message_{t}")(e) * nn.Dense(
                c, use_bias=False, name=f"sender_{t}")(h)[s]
            h = h + MLP([c, c], activation=act, name=f"node_update_{t}")(segment_mean(m, r, n))
        out = MLP([c // 2, 1], activation=act, name="readout")(h)
        return graph_mean_readout(out, graph)


class ReferenceSchNet(_MessagePassing):
    """SchNet (``models.mpnn.SchNet``) in its plain form: one filter MLP per block on the radial basis."""

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple):
        """Per-graph predictions in standardised units, shape ``(n_graph,)``."""
        c, n = self.latent_size, graph.nodes.shape[0]
        act = reference_shifted_softplus
        h, rbf = self.embed(graph)
        s, r = graph.senders, graph.receivers
        for t in range(self.message_passing_steps):
            filt = MLP([c, c], activation=act, activate_final=True, name=f"filter_{t}")(rbf)
            m = filt * nn.Dense(c, use_bias=False, name=f"sender_{t}")(h)[s]
            h = h + MLP([c, c], activation=act, name=f"node_update_{t}")(segment_mean(m, r, n))
        out = MLP([c // 2, 1], activation=act, name="readout")(h)
        return graph_mean_readout(out, graph)


REFERENCE = {"mpeu": ReferenceMPEU, "schnet": ReferenceSchNet}
