"""Pure jitted steps over explicit state and a batch pytree (Flax's ``TrainState``).

``train_step(state, batch) -> (state, {"loss"})`` and ``eval_step(state, batch) -> {"sse", "sae",
"n"}``, where ``batch`` is a :class:`~gnn_batching.batching.GraphBatch` (graph, targets, mask).

Padding is handled here and only here: the loss is the mean squared error on standardised
targets over REAL graphs, ``sum(mask * err^2) / sum(mask)``; evaluation sums squared and
absolute errors in physical units over real graphs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph
import optax
from flax.training.train_state import TrainState

from gnn_batching.data.store import TargetStats

__all__ = ["TrainState", "count_params", "init_state", "make_loss", "make_optimizer", "make_steps", "masked_mse"]


def make_optimizer(lr: float, decay_steps: int, decay_rate: float, staircase: bool) -> optax.GradientTransformation:
    """Adam with the study's exponential decay schedule."""
    schedule = optax.exponential_decay(lr, transition_steps=decay_steps, decay_rate=decay_rate, staircase=staircase)
    return optax.adam(schedule)


def masked_mse(pred: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error over real graphs: ``sum(mask * err^2) / sum(mask)``.

    Padding is removed with ``jnp.where``, not by multiplying with 0: a padding prediction that
    overflowed to inf would otherwise turn the loss into NaN (inf * 0).
    """
    err = jnp.where(mask, pred - y, 0.0)
    return jnp.sum(err**2) / jnp.maximum(jnp.sum(mask.astype(pred.dtype)), 1.0)


def make_loss(model, stats: TargetStats):
    """``loss_fn(variables, graph, targets, mask)``: masked MSE on standardised targets."""
    mean, std = float(stats.mean), float(stats.std)

    def loss_fn(variables, graph: jraph.GraphsTuple, targets: jax.Array, mask: jax.Array) -> jax.Array:
        pred = model.apply(variables, graph)
        return masked_mse(pred, (targets - mean) / std, mask)

    return loss_fn


def make_steps(model, stats: TargetStats):
    """(train_step, eval_step), both jitted, over ``(state, batch)``.

    The state carries the optimizer (see :func:`init_state`); ``stats`` are the training split's
    target statistics (the model predicts standardised targets).
    """
    loss_fn = make_loss(model, stats)
    mean, std = float(stats.mean), float(stats.std)

    @jax.jit
    def train_step(state: TrainState, batch):
        def loss_of(params):
            return loss_fn({"params": params}, batch.graph, batch.targets, batch.mask)

        loss, grads = jax.value_and_grad(loss_of)(state.params)
        return state.apply_gradients(grads=grads), {"loss": loss}

    @jax.jit
    def eval_step(state: TrainState, batch):
        pred = state.apply_fn({"params": state.params}, batch.graph) * std + mean
        err = jnp.where(batch.mask, pred - batch.targets, 0.0)  # where, not * 0: see masked_mse
        return {"sse": jnp.sum(err**2), "sae": jnp.sum(jnp.abs(err)), "n": jnp.sum(batch.mask.astype(pred.dtype))}

    return train_step, eval_step


def init_state(model, tx: optax.GradientTransformation, graph: jraph.GraphsTuple, seed: int) -> TrainState:
    """Flax ``TrainState`` with the model's parameters initialised from ``seed`` on ``graph``'s shapes."""
    variables = model.init(jax.random.PRNGKey(seed), graph)
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)
    # a strongly typed step counter: flax's Python int 0 comes back from the first step as an
    # array of another (weak) type, which would compile the train step a second time
    return state.replace(step=jnp.zeros((), jnp.int32))


def count_params(params) -> int:
    """Number of scalar parameters in a parameter pytree."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
