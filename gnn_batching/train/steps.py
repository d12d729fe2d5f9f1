"""Pure jitted steps over explicit state.

``train_step(state, graph, targets, mask) -> (state, {"loss"})`` and
``eval_step(params, graph, targets, mask) -> {"sse", "sae", "n"}``.

Padding is handled here and only here: the loss is the mean squared error on standardised
targets over REAL graphs, ``sum(mask * err^2) / sum(mask)``; evaluation sums squared and
absolute errors in physical units over real graphs.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from gnn_batching.data.store import TargetStats


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any


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
    mean, std = float(stats.mean), float(stats.std)

    def loss_fn(params, graph, targets, mask):
        pred = model.apply(params, graph)
        return masked_mse(pred, (targets - mean) / std, mask)

    return loss_fn


def make_steps(model, tx: optax.GradientTransformation, stats: TargetStats):
    """(train_step, eval_step), both jitted."""
    loss_fn = make_loss(model, stats)
    mean, std = float(stats.mean), float(stats.std)

    @jax.jit
    def train_step(state: TrainState, graph, targets, mask):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, graph, targets, mask)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), {"loss": loss}

    @jax.jit
    def eval_step(params, graph, targets, mask):
        pred = model.apply(params, graph) * std + mean
        err = jnp.where(mask, pred - targets, 0.0)  # where, not * 0: see masked_mse
        return {"sse": jnp.sum(err**2), "sae": jnp.sum(jnp.abs(err)), "n": jnp.sum(mask.astype(pred.dtype))}

    return train_step, eval_step


def init_state(model, tx, graph, seed: int) -> TrainState:
    params = model.init(jax.random.PRNGKey(seed), graph)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
