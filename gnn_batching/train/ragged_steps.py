"""Autobatch's ragged mode as steps: the model written for ONE graph, re-interpreted on a padded
disjoint union (:mod:`gnn_batching.ragged`), summed over the real graphs like every layout."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import jax.numpy as jnp

from gnn_batching.config import BatchingConfig
from gnn_batching.data.store import TargetStats
from gnn_batching.errors import ConfigError
from gnn_batching.ragged import from_batch, ragged_loss

log = logging.getLogger(__name__)


def one_graph_prediction(model) -> Callable:
    """``(params, graph) -> scalar``: the model's prediction for ONE unpadded graph."""

    def pred(params, graph):
        return model.apply({"params": params}, graph)[0]

    return pred


def ragged_refusal(model, graph) -> str | None:
    """Why ``model``, applied to one graph, cannot run ragged on batches shaped like ``graph``
    (the primitive and the source line), or None when it can: traced abstractly (no compile)."""
    import jax

    from gnn_batching.ragged import Refused

    try:
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0), graph)["params"]
        union, n_graph = from_batch(graph)
        jax.eval_shape(lambda p: ragged_loss(one_graph_prediction(model), p, union, n_graph), params)
    except Refused as exc:
        return str(exc)
    return None


def resolve_autobatch(bcfg: BatchingConfig, model, graph) -> tuple[BatchingConfig, dict]:
    """Which autobatch mode runs ``model``: ``bcfg`` itself when it asks for vmap or ragged
    transforms on batches shaped like ``graph`` (one of ``bcfg.autobatch_base``'s), a vmap copy
    when ``auto``'s ragged is refused; and the summary's fields (``autobatch_mode``,
    ``autobatch_mode_used``, ``autobatch_mode_reason``). Other methods: ``bcfg`` and no fields.

    Raises:
      ConfigError: ``autobatch_mode: ragged`` and the model cannot be proven to transform.
    """
    if bcfg.method != "autobatch":
        return bcfg, {}
    mode = {"autobatch_mode": bcfg.autobatch_mode, "autobatch_mode_used": "vmap",
            "autobatch_mode_reason": "batching.autobatch_mode: vmap"}
    if bcfg.autobatch_mode == "vmap":
        return bcfg, mode
    refused = ragged_refusal(model, graph)
    if refused is None:
        mode.update(autobatch_mode_used="ragged", autobatch_mode_reason="the one-graph model transforms "
                    f"(proven on abstract traces); batches of {bcfg.autobatch_base}")
        return bcfg, mode
    if bcfg.autobatch_mode == "ragged":
        raise ConfigError(f"batching.autobatch_mode: ragged: {refused}")
    mode["autobatch_mode_reason"] = f"ragged refused: {refused}"
    return dataclasses.replace(bcfg, autobatch_mode="vmap"), mode


def autobatch_loaders(bcfg: BatchingConfig, model, store, targets, splits, seed: int = 0, shard=None):
    """``make_loaders`` with autobatch's mode resolved for ``model`` (:func:`resolve_autobatch`,
    proven on the training loader's first batch): ``(method, train, evals, summary fields)``."""
    from gnn_batching.batching.loader import make_loaders

    method, train, evals = make_loaders(bcfg, store, targets, splits, seed=seed, shard=shard)
    used, mode = resolve_autobatch(bcfg, model, train.example().arrays.graph if method.step_form == "ragged" else None)
    if used is not bcfg:  # auto, and ragged refused: the slots of vmap mode
        log.info(f"autobatch: vmap mode, since {mode['autobatch_mode_reason']}")
        method, train, evals = make_loaders(used, store, targets, splits, seed=seed, shard=shard)
    return method, train, evals, mode


def autobatch_method(bcfg: BatchingConfig, model, store, train_index, targets, seed: int = 0):
    """``make_method`` with autobatch's mode resolved for ``model`` (:func:`resolve_autobatch`):
    ``(method, summary fields)``; the method's ``steps_layout`` is the step to build."""
    from gnn_batching.batching.registry import make_method

    method = make_method(bcfg, store, train_index, seed=seed)
    graph = None
    if method.step_form == "ragged":
        graph = next(iter(method.iterate(store, method.plan(train_index), targets))).arrays.graph
    used, mode = resolve_autobatch(bcfg, model, graph)
    return (method if used is bcfg else make_method(used, store, train_index, seed=seed)), mode


def make_ragged_sums(model, stats: TargetStats) -> tuple[Callable, Callable]:
    """``(loss_sums, eval_sums)`` (see :func:`gnn_batching.train.steps.make_sums`) with each
    graph's prediction from the one-graph model re-interpreted on the batch."""
    mean, std = float(stats.mean), float(stats.std)
    pred_one = one_graph_prediction(model)

    def predictions(params, batch):
        union, n_graph = from_batch(batch.graph, batch.mask)
        return ragged_loss(pred_one, params, union, n_graph)

    def loss_sums(params, batch):
        pred = predictions(params, batch)
        err = jnp.where(batch.mask, pred - (batch.targets - mean) / std, 0.0)
        return jnp.sum(err**2), jnp.sum(batch.mask.astype(pred.dtype))

    def eval_sums(params, batch):
        pred = predictions(params, batch) * std + mean
        err = jnp.where(batch.mask, pred - batch.targets, 0.0)
        return {"sse": jnp.sum(err**2), "sae": jnp.sum(jnp.abs(err)), "n": jnp.sum(batch.mask.astype(pred.dtype))}

    return loss_sums, eval_sums
