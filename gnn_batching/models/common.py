"""Building blocks shared by the models (the study's conventions).

Batch input is a jraph ``GraphsTuple``: ``nodes`` (N,) int32 species class, ``edges`` (E, 4)
float32 [dx, dy, dz, d], ``senders``/``receivers`` (E,), ``n_node``/``n_edge`` (G,).
Every model maps it to one prediction per graph, shape (G,), in standardised target units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

LOG2 = 0.6931471805599453


@jax.custom_jvp
def shifted_softplus(x: jax.Array) -> jax.Array:
    """ssp(x) = log(1 + e^x) - log 2 (so ssp(0) = 0), written as max(x, 0) + log1p(e^-|x|) - log 2.

    The same values as ``jax.nn.softplus(x) - log 2``; its derivative, the logistic sigmoid,
    reuses the forward pass's ``e^-|x|`` instead of computing its own exponentials (``jax.nn.softplus``
    differentiates ``logaddexp``, which does): one transcendental fewer per element and training
    step, where most of the models' elements go through this function.
    """
    return _ssp_and_slope(x)[0]


def _ssp_and_slope(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    e = jnp.exp(jnp.minimum(x, 30.0))
    y = jnp.where(x > 30.0, x, jnp.log(1.0 + e)) - LOG2
    return y, e / (1.0 + e)


@shifted_softplus.defjvp
def _shifted_softplus_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y, slope = _ssp_and_slope(x)
    return y, t * slope


def gaussian_rbf(d: jax.Array, n: int = 150, spacing: float = 0.1, width: float = 0.1) -> jax.Array:
    """(E,) -> (E, n): exp(-(d - k * spacing)^2 / width), k = 0..n-1 (the study's expansion;
    note the denominator is ``width``, not ``width**2``)."""
    centers = jnp.arange(n, dtype=d.dtype) * spacing
    return jnp.exp(-((d[:, None] - centers[None, :]) ** 2) / width)


class MLP(nn.Module):
    """Dense layers of the given widths with ``activation`` between them (and after the last
    one if ``activate_final``). Bias-free by default, as in the study."""

    features: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = shifted_softplus
    activate_final: bool = False
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the layers to ``x`` of shape ``(..., d_in)``; returns ``(..., features[-1])``."""
        for i, f in enumerate(self.features):
            x = nn.Dense(f, use_bias=self.use_bias, name=f"dense_{i}")(x)
            if i < len(self.features) - 1 or self.activate_final:
                x = self.activation(x)
        return x


class Kernel(nn.Module):
    """A bias-free dense layer's kernel alone, ``(d_in, features)``: the same parameter (path,
    name, shape and initial value) as ``nn.Dense(features, use_bias=False)`` under the same name,
    for code that multiplies it itself (several kernels in one matmul, a kernel split by rows)."""

    features: int

    @nn.compact
    def __call__(self, d_in: int) -> jax.Array:
        """The kernel for inputs of width ``d_in``."""
        return self.param("kernel", nn.initializers.lecun_normal(), (d_in, self.features), jnp.float32)


class MLPKernels(nn.Module):
    """The kernels of :class:`MLP` (``dense_0``, ``dense_1``, ...), same parameters, unapplied."""

    features: Sequence[int]

    @nn.compact
    def __call__(self, d_in: int) -> list[jax.Array]:
        """One kernel per layer, the first for inputs of width ``d_in``."""
        kernels = []
        for i, f in enumerate(self.features):
            kernels.append(Kernel(f, name=f"dense_{i}")(d_in))
            d_in = f
        return kernels


def mlp(x: jax.Array, kernels: Sequence[jax.Array], activate_final: bool = False,
        activation: Callable[[jax.Array], jax.Array] = shifted_softplus) -> jax.Array:
    """:class:`MLP`'s computation with given kernels: ``x @ k0``, activation, ``@ k1``, ..."""
    for i, k in enumerate(kernels):
        x = jnp.dot(x, k)
        if i < len(kernels) - 1 or activate_final:
            x = activation(x)
    return x


def in_degree(receivers: jax.Array, num_nodes: int, dtype=jnp.float32) -> jax.Array:
    """(N, 1) edges into each node, at least 1 (the divisor of :func:`segment_mean`)."""
    count = jax.ops.segment_sum(jnp.ones_like(receivers, dtype=dtype), receivers, num_nodes)
    return jnp.maximum(count, 1.0)[:, None]


def node_graph_index(graph: jraph.GraphsTuple) -> jax.Array:
    """(N,) index of the graph each node belongs to (padding nodes -> the padding graph)."""
    n_graph = graph.n_node.shape[0]
    n_total = graph.nodes.shape[0]
    return jnp.repeat(jnp.arange(n_graph), graph.n_node, total_repeat_length=n_total)


def segment_mean(data: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
    """Mean over segments; empty segments give 0 (never NaN)."""
    total = jax.ops.segment_sum(data, segment_ids, num_segments)
    count = jax.ops.segment_sum(jnp.ones_like(segment_ids, dtype=data.dtype), segment_ids, num_segments)
    count = jnp.maximum(count, 1.0).reshape((-1,) + (1,) * (data.ndim - 1))
    return total / count


def graph_mean_readout(per_node: jax.Array, graph: jraph.GraphsTuple) -> jax.Array:
    """(N,) or (N, 1) per-node values -> (G,) mean over each graph's nodes."""
    per_node = per_node.reshape(per_node.shape[0])
    g = graph.n_node.shape[0]
    if g == 1:  # one unpadded graph (autobatch's ragged mode traces the model so): its plain mean
        return jnp.mean(per_node, keepdims=True)
    return segment_mean(per_node, node_graph_index(graph), g)


def one_hot_species(graph: jraph.GraphsTuple, n_species: int) -> jax.Array:
    """Node features from species indices: shape ``(n_node, n_species)`` float32."""
    return jax.nn.one_hot(graph.nodes, n_species, dtype=jnp.float32)
