"""PaiNN (Schütt, Unke, Gastegger 2021): equivariant scalar (s) and vector (v) node features.

Width F = 256, 3 interaction layers, 20 Gaussian RBF on [0, 6 A], cosine cutoff 6 A, SiLU,
SUM message aggregation, readout Linear(F)-SiLU-Linear(1) per node with mean pooling.
Shapes: s (N, F), v (N, 3, F); edge unit vectors u (E, 3) from the displacement vectors.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from gnn_batching.models.common import graph_mean_readout, one_hot_species
from gnn_batching.plugins import register_model


def cosine_cutoff(d: jax.Array, cutoff: float) -> jax.Array:
    """Smooth cutoff ``0.5 (cos(pi d / cutoff) + 1)`` for ``d < cutoff``, else 0; same shape as ``d``."""
    return jnp.where(d < cutoff, 0.5 * (jnp.cos(jnp.pi * d / cutoff) + 1.0), 0.0)


@register_model("painn")
class PaiNN(nn.Module):
    """PaiNN (Schuett et al. 2021): equivariant scalar and vector features, summed per graph.

    Attributes:
      n_species: number of element types (one-hot input size).
      latent_size: width of scalar and vector features.
      message_passing_steps: interaction blocks.
      n_rbf: radial basis functions on edge lengths.
    """
    n_species: int
    latent_size: int = 256
    message_passing_steps: int = 3
    n_rbf: int = 20
    cutoff: float = 6.0

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple):
        """Per-graph predictions in standardised units, shape ``(n_graph,)`` (padding graphs included)."""
        f = self.latent_size
        n = graph.nodes.shape[0]
        s_idx, r_idx = graph.senders, graph.receivers
        vec = graph.edges[:, :3]
        d = graph.edges[:, 3]
        u = vec / jnp.where(d > 0, d, 1.0)[:, None]  # padding edges have d = 0
        centers = jnp.linspace(0.0, self.cutoff, self.n_rbf)
        width = (centers[1] - centers[0]) if self.n_rbf > 1 else 1.0
        rbf = jnp.exp(-0.5 * ((d[:, None] - centers[None, :]) / width) ** 2)
        fcut = cosine_cutoff(d, self.cutoff)[:, None]

        s = nn.Dense(f, name="embed")(one_hot_species(graph, self.n_species))
        v = jnp.zeros((n, 3, f), s.dtype)
        for t in range(self.message_passing_steps):
            # message
            phi = nn.Dense(3 * f, name=f"msg_phi2_{t}")(jax.nn.silu(nn.Dense(f, name=f"msg_phi1_{t}")(s)))
            w = nn.Dense(3 * f, name=f"msg_filter_{t}")(rbf) * fcut
            x = phi[s_idx] * w
            ds, dvv, dvs = jnp.split(x, 3, axis=-1)
            dv = v[s_idx] * dvv[:, None, :] + dvs[:, None, :] * u[:, :, None]
            s = s + jax.ops.segment_sum(ds, r_idx, n)
            v = v + jax.ops.segment_sum(dv, r_idx, n)
            # update
            uv = nn.Dense(f, use_bias=False, name=f"upd_U_{t}")(v)
            vv = nn.Dense(f, use_bias=False, name=f"upd_V_{t}")(v)
            vnorm = jnp.sqrt(jnp.sum(vv**2, axis=1) + 1e-8)
            a = nn.Dense(3 * f, name=f"upd_a2_{t}")(
                jax.nn.silu(nn.Dense(f, name=f"upd_a1_{t}")(jnp.concatenate([s, vnorm], axis=-1))))
            a_vv, a_sv, a_ss = jnp.split(a, 3, axis=-1)
            v = v + a_vv[:, None, :] * uv
            s = s + jnp.sum(uv * vv, axis=1) * a_sv + a_ss
        out = nn.Dense(1, name="readout_2")(jax.nn.silu(nn.Dense(f, name="readout_1")(s)))
        return graph_mean_readout(out, graph)
