"""Autobatch, device side: the user's loss for ONE graph, vmapped per shape bucket, combined
into one gradient and one optimizer update per step.

A batch (host side: :mod:`gnn_batching.batching.slots`) is a tuple with one entry per shape
bucket: a :class:`~gnn_batching.batching.GraphBatch` whose leaves carry a leading slot axis.
Each slot is a jraph ``GraphsTuple`` of one real graph plus its padding graph (``n_node`` is
``[n_real, n_pad]``), its scalar target, and a mask that is False for an empty slot.

:func:`make_train_step` turns ``loss_one(params, graph, target) -> scalar`` into
``step(state, batch) -> (state, {"loss"})``: ``jax.vmap(loss_one)`` over each bucket's slots,
the mean over REAL graphs of all buckets (``jnp.where`` on the mask, so an empty slot cannot
leak even a NaN), one ``value_and_grad``, one ``apply_gradients``. With a fixed slot count
per bucket the step is one program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jraph

from gnn_batching.data.store import TargetStats
from gnn_batching.train.steps import steps_from_sums

LossOne = Callable[[object, jraph.GraphsTuple, jax.Array], jax.Array]


def slots_loss(loss_one: LossOne, params, batch: tuple) -> tuple[jax.Array, jax.Array]:
    """Sum of ``loss_one`` over the real graphs of every bucket, and the number of real graphs."""
    total = jnp.zeros((), jnp.float32)
    count = jnp.zeros((), jnp.float32)
    for bucket in batch:
        per_graph = jax.vmap(loss_one, in_axes=(None, 0, 0))(params, bucket.graph, bucket.targets)
        total = total + jnp.sum(jnp.where(bucket.mask, per_graph, 0.0))
        count = count + jnp.sum(bucket.mask.astype(jnp.float32))
    return total, count


def make_train_step(loss_one: LossOne):
    """A jitted ``step(state, batch) -> (state, {"loss"})`` from a per-graph loss.

    Args:
      loss_one: ``loss_one(params, graph, target) -> scalar`` for ONE graph (a ``GraphsTuple``
        of the real graph and its padding graph; use ``[0]`` of a per-graph model output).

    Returns:
      The step: mean of ``loss_one`` over every real graph of the batch, one gradient, one update.
    """
    return steps_from_sums(functools.partial(slots_loss, loss_one), _no_eval)[0]


def _no_eval(params, batch):  # pragma: no cover - the public train step has no evaluation
    raise NotImplementedError


def make_loss_one(model, stats: TargetStats) -> LossOne:
    """The built-in models' per-graph loss: squared error of the prediction for the real graph
    (``model.apply(...)[0]``) on standardised targets. Its mean over real graphs equals the
    disjoint-union step's masked MSE for the same graphs (tested)."""
    mean, std = float(stats.mean), float(stats.std)

    def loss_one(params, graph: jraph.GraphsTuple, target: jax.Array) -> jax.Array:
        return (model.apply({"params": params}, graph)[0] - (target - mean) / std) ** 2

    return loss_one


def make_slot_sums(model, stats: TargetStats) -> tuple[Callable, Callable]:
    """``(loss_sums, eval_sums)`` of the slots layout (see :func:`gnn_batching.train.steps.make_sums`)."""
    mean, std = float(stats.mean), float(stats.std)

    def predict_one(params, graph: jraph.GraphsTuple) -> jax.Array:
        return model.apply({"params": params}, graph)[0]

    def eval_sums(params, batch: tuple):
        sse = sae = n = jnp.zeros((), jnp.float32)
        for bucket in batch:
            pred = jax.vmap(predict_one, in_axes=(None, 0))(params, bucket.graph) * std + mean
            err = jnp.where(bucket.mask, pred - bucket.targets, 0.0)
            sse, sae = sse + jnp.sum(err**2), sae + jnp.sum(jnp.abs(err))
            n = n + jnp.sum(bucket.mask.astype(jnp.float32))
        return {"sse": sse, "sae": sae, "n": n}

    return functools.partial(slots_loss, make_loss_one(model, stats)), eval_sums


def make_slot_steps(model, stats: TargetStats):
    """(train_step, eval_step) for a model run per graph under ``vmap`` (see :func:`make_loss_one`)."""
    return steps_from_sums(*make_slot_sums(model, stats))


def first_slot_graph(batch: tuple) -> jraph.GraphsTuple:
    """One slot's graph (first bucket, first slot): what a per-graph model is initialised on."""
    return jax.tree_util.tree_map(lambda x: x[0], batch[0].graph)
