"""A model and a batching method of your own, used by name like the built-in ones.

    gnn-batching run configs/smoke.yaml --module configs/my_plugins.py \
        --set model.name=tiny-gcn --set batching.method=static-round --set batching.options.multiple=32
    gnn-batching sweep configs/plugins.yaml        # both, beside schnet and dynamic
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from gnn_batching import register_method, register_model
from gnn_batching.batching.methods import StaticMethod


@register_model("tiny-gcn")
class TinyGCN(nn.Module):
    """Species embedding, a few rounds of distance-weighted neighbour sums, a sum per graph."""

    n_species: int  # set by the suite: distinct atom types in the dataset
    latent_size: int = 32  # hyperparameters are fields: model.latent_size, model.rounds
    rounds: int = 2

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple) -> jax.Array:
        """One prediction per graph slot of a padded batch, shape (n_graph,)."""
        n, n_graph = graph.nodes.shape[0], graph.n_node.shape[0]
        h = nn.Embed(self.n_species, self.latent_size)(graph.nodes)  # nodes: (N,) species ids
        weight = jnp.exp(-graph.edges[:, 3:4])  # edges: (E, 4) [dx, dy, dz, distance]
        for _ in range(self.rounds):
            messages = jax.ops.segment_sum(h[graph.senders] * weight, graph.receivers, n)
            h = jnp.tanh(nn.Dense(self.latent_size)(h + messages))
        graph_id = jnp.repeat(jnp.arange(n_graph), graph.n_node, total_repeat_length=n)
        return nn.Dense(1)(jax.ops.segment_sum(h, graph_id, n_graph))[:, 0]  # (n_graph,) predictions


@register_method("static-round")
class StaticRound(StaticMethod):
    """The study's static batching, nodes and edges rounded up to a multiple of your choice."""

    options = {"multiple": 128}  # batching.options.multiple (an int, 128 unless set)
    style = ("black", "X")  # its colour and marker in every figure

    def shapes_for(self, sum_n, sum_e):
        """Padded nodes (>= real + 1 for the padding graph) and edges of each batch."""
        m = int(self.option("multiple"))
        return -(-(sum_n + 1) // m) * m, -(-sum_e // m) * m
