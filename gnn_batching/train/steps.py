"""Pure jitted steps over explicit state and a batch pytree (Flax's ``TrainState``).

``train_step(state, batch) -> (state, {"loss"})`` and ``eval_step(state, batch) -> {"sse", "sae",
"n"}``, where ``batch`` is a :class:`~gnn_batching.batching.GraphBatch` (graph, targets, mask).

Padding is handled here and only here: the loss is the mean squared error on standardised
targets over REAL graphs, ``sum(mask * err^2) / sum(mask)``; evaluation sums squared and
absolute errors in physical units over real graphs.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jraph
import optax
from flax.training.train_state import TrainState

from gnn_batching.data.store import TargetStats

__all__ = ["TrainState", "count_params", "init_state", "make_loss", "make_optimizer", "make_steps", "make_sums",
           "masked_mse", "steps_from_sums"]


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


def make_sums(model, stats: TargetStats) -> tuple[Callable, Callable]:
    """Per-batch sums over REAL graphs, from which every step is built (one device or many).

    Returns:
      ``loss_sums(params, batch) -> (sum of squared standardised errors, real graphs)`` and
      ``eval_sums(params, batch) -> {"sse", "sae", "n"}`` in physical units.
    """
    mean, std = float(stats.mean), float(stats.std)

    def loss_sums(params, batch):
        pred = model.apply({"params": params}, batch.graph)
        err = jnp.where(batch.mask, pred - (batch.targets - mean) / std, 0.0)  # where, not * 0: see masked_mse
        return jnp.sum(err**2), jnp.sum(batch.mask.astype(pred.dtype))

    def eval_sums(params, batch):
        pred = model.apply({"params": params}, batch.graph) * std + mean
        err = jnp.where(batch.mask, pred - batch.targets, 0.0)
        return {"sse": jnp.sum(err**2), "sae": jnp.sum(jnp.abs(err)), "n": jnp.sum(batch.mask.astype(pred.dtype))}

    return loss_sums, eval_sums


def steps_from_sums(loss_sums: Callable, eval_sums: Callable):
    """(train_step, eval_step), both jitted, over ``(state, batch)`` on one device: the loss is
    ``total / max(real graphs, 1)``, one gradient, one optimizer update."""

    @jax.jit
    def train_step(state: TrainState, batch):
        def mean_loss(params):
            total, count = loss_sums(params, batch)
            return total / jnp.maximum(count, 1.0)

        loss, grads = jax.value_and_grad(mean_loss)(state.params)
        return state.apply_gradients(grads=grads), {"loss": loss}

    @jax.jit
    def eval_step(state: TrainState, batch):
        return eval_sums(state.params, batch)

    return train_step, eval_step


def make_steps(model, stats: TargetStats):
    """(train_step, eval_step), both jitted, over ``(state, batch)``.

    The state carries the optimizer (see :func:`init_state`); ``stats`` are the training split's
    target statistics (the model predicts standardised targets). The train loss is the masked
    MSE over real graphs (:func:`masked_mse`).
    """
    return steps_from_sums(*make_sums(model, stats))


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
