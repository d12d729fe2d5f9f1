"""The study's own training step, in its own formulation, for side-by-side timing.

The study's code (Haiku, public repository ``jraph_MPEU``) writes MPEU and SchNet as stacks of
``jraph.GraphNetwork`` layers, and its update as a ``jax.pmap`` over the devices. This module is
a Flax transcription of that formulation, written here from its structure (no code copied), so
``bench roofline --compare study`` can time the study's step and ours on the SAME padded batches:

* inputs embedded by ``jraph.GraphMapFeatures``-style functions: the distance expansion through a
  ``meshgrid`` of ``k`` and ``d``, ``exp(-(d - k * 0.1)^2 / 0.1)``; the edge state a dict
  ``{"edges", "messages"}`` (messages start as zeros);
* each message-passing step one ``jraph.GraphNetwork``: the edge function gets ``nodes[senders]``
  and ``nodes[receivers]`` (MPEU: ``concat`` of both with the edge state, MLP [2C, C]; SchNet:
  the filter MLP on the radial basis), messages ``= MLP(e) * Linear(h_s)``; both edge entries
  averaged into the nodes with ``jraph.segment_mean`` (whose count sums ``ones_like`` the data);
  node update ``h + MLP[C, C](mean message)``;
* the readout a last ``GraphNetwork``: per-node MLP [C/2, 1], ``jraph.segment_mean`` over each
  graph's nodes;
* ``ssp(x) = logaddexp(x, 0) - log 2``, no biases, Adam through optax;
* the step ``jax.pmap``-ed over the (one) device with ``lax.pmean`` of the gradients, as the study's
  ``Updater.update``; its loss is our masked mean squared error on standardised targets.

Left out: the study's rate-0.0 dropout calls and Haiku's state plumbing (no arithmetic in either
at rate 0), checkpointing and logging inside the update (outside the timed step here).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import optax

from gnn_batching.models.common import LOG2


def _ssp(x: jax.Array) -> jax.Array:
    return jnp.logaddexp(x, 0) - LOG2


class _StudyMLP(nn.Module):
    """hk.Linear layers without bias, ssp between (and after the last if ``activate_final``)."""

    features: tuple[int, ...]
    activate_final: bool = False

    @nn.compact
    def __call__(self, x):
        """Apply the layers."""
        for i, f in enumerate(self.features):
            x = nn.Dense(f, use_bias=False, name=f"linear_{i}")(x)
            if i < len(self.features) - 1 or self.activate_final:
                x = _ssp(x)
        return x


class StudyModel(nn.Module):
    """MPEU (``edge_updates=True``) or SchNet in the study's ``GraphNetwork`` formulation."""

    n_species: int
    edge_updates: bool = True
    latent_size: int = 64
    message_passing_steps: int = 3
    n_rbf: int = 150

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple) -> jax.Array:
        """Per-graph predictions, shape ``(n_graph,)``."""
        c = self.latent_size
        k_mesh, d_mesh = jnp.meshgrid(jnp.arange(0, self.n_rbf), graph.edges[:, 3])
        rbf = jnp.exp(-1 * jnp.square(d_mesh + 0.0 - k_mesh * 0.1) / 0.1)
        edges = {"edges": rbf, "messages": jnp.zeros((rbf.shape[0], c))}
        nodes = _StudyMLP((c,), name="node_embedding")(jax.nn.one_hot(graph.nodes, self.n_species))
        g = graph._replace(nodes=nodes, edges=edges, globals=None)
        for t in range(self.message_passing_steps):
            g = jraph.GraphNetwork(update_edge_fn=self._edge_fn(t), update_node_fn=self._node_fn(t),
                                   aggregate_edges_for_nodes_fn=jraph.segment_mean)(g)
        readout = _StudyMLP((c // 2, 1), name="readout_node")
        out = jraph.GraphNetwork(update_edge_fn=None, update_node_fn=lambda n, s, r, gl: readout(n),
                                 update_global_fn=lambda n, e, gl: n,
                                 aggregate_nodes_for_globals_fn=jraph.segment_mean)(g)
        return out.globals[:, 0]

    def _edge_fn(self, t: int):
        c = self.latent_size
        if self.edge_updates:
            net_edge = _StudyMLP((2 * c, c), name=f"edge_update_{t}")
        else:
            net_edge = None
        net_filter = _StudyMLP((c, c), activate_final=True, name=f"message_edge_net_{t}")
        net_node = _StudyMLP((c,), name=f"message_node_net_{t}")

        def fn(edge_message, sent, received, global_edge_attributes):
            edge_message = dict(edge_message)
            if net_edge is not None:
                cat = jnp.concatenate([sent, received, edge_message["edges"]], axis=-1)
                edge_message["edges"] = net_edge(cat)
            edge_message["messages"] = jnp.multiply(net_filter(edge_message["edges"]), net_node(sent))
            return edge_message

        return fn

    def _node_fn(self, t: int):
        net = _StudyMLP((self.latent_size, self.latent_size), name=f"node_update_{t}")

        def fn(nodes, sent, received, global_attributes):
            return nodes + net(received["messages"])

        return fn


def make_study_step(model: StudyModel, mean: float, std: float, tx: optax.GradientTransformation):
    """The study's update: ``pmap`` over devices, value and gradient of the loss, ``pmean`` of the
    gradients, the optimizer's update. ``step(state, graph, targets, mask) -> (state, loss)``
    where ``state = (params, opt_state)`` and every argument carries a leading device axis."""

    def loss_fn(params, graph, targets, mask):
        pred = model.apply({"params": params}, graph)
        err = jnp.where(mask, pred - (targets - mean) / std, 0.0)
        return jnp.sum(err**2) / jnp.maximum(jnp.sum(mask.astype(pred.dtype)), 1.0)

    def update(state, graph, targets, mask):
        params, opt_state = state
        loss, grad = jax.value_and_grad(loss_fn)(params, graph, targets, mask)
        grad = jax.lax.pmean(grad, axis_name="device")
        updates, opt_state = tx.update(grad, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.pmap(update, axis_name="device")


def study_model(name: str, n_species: int) -> StudyModel:
    """The study-formulation model for ``mpeu`` or ``schnet``."""
    if name not in ("mpeu", "schnet"):
        from gnn_batching.errors import UserError

        raise UserError(f"--compare study: the study's formulation exists for mpeu and schnet, not {name!r}")
    return StudyModel(n_species=n_species, edge_updates=name == "mpeu")
