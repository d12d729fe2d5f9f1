"""Autobatch's ragged mode as steps: the model written for ONE graph, re-interpreted on a padded
disjoint union (:mod:`gnn_batching.ragged`), summed over the real graphs like every layout."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

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


def ragged_refusal(model, graph, mask=None) -> tuple[str | None, dict]:
    """Why ``model``, applied to one graph, cannot run ragged on batches shaped like ``graph``
    (the primitive and the source line, or the real-batch check's difference), or None when it
    can; and the check's fields for the summary (``autobatch_check_max_diff``,
    ``autobatch_check_graphs``, ``autobatch_check_s``).

    The proof is the union program itself (traced with symbolic sizes, every primitive by a rule
    or refused) and, as a last line of defence, its values and gradients on the real batch
    ``graph`` against its smallest and largest graphs run alone, at random parameters
    (:func:`gnn_batching.ragged.check_batch`)."""
    import time

    import jax

    from gnn_batching.ragged import Refused, check_batch, one_graph
    from gnn_batching.ragged.check import random_params

    t0 = time.perf_counter()
    try:
        host = jax.tree_util.tree_map(np.asarray, graph)
        real = np.asarray(mask, bool) if mask is not None else np.asarray(host.n_node) > 0
        first = one_graph(host, int(np.flatnonzero(real)[0]) if real.any() else 0)
        shapes = jax.eval_shape(lambda key: model.init(key, first)["params"], jax.random.PRNGKey(0))
        res = check_batch(one_graph_prediction(model), random_params(shapes), host, real)
    except Refused as exc:
        return str(exc), {"autobatch_check_s": round(time.perf_counter() - t0, 3)}
    except Exception as exc:  # the model itself fails on one graph: not provable, say why
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return (f"ragged: the one-graph model fails on one graph ({type(exc).__name__}: {first_line})",
                {"autobatch_check_s": round(time.perf_counter() - t0, 3)})
    return None, {"autobatch_check_max_diff": res.max_diff, "autobatch_check_graphs": len(res.graphs),
                  "autobatch_check_s": round(time.perf_counter() - t0, 3)}


def resolve_autobatch(bcfg: BatchingConfig, model, graph, mask=None) -> tuple[BatchingConfig, dict]:
    """Which autobatch mode runs ``model``: ``bcfg`` itself when it asks for vmap or ragged
    transforms on batches shaped like ``graph`` (one of ``bcfg.autobatch_base``'s, ``mask`` its
    real graphs), a vmap copy when ``auto``'s ragged is refused; and the summary's fields
    (``autobatch_mode``, ``autobatch_mode_used``, ``autobatch_mode_reason`` and the real-batch
    check's ``autobatch_check_*``). Other methods: ``bcfg`` and no fields.

    Raises:
      ConfigError: ``autobatch_mode: ragged`` and the model cannot be proven to transform.
    """
    if bcfg.method != "autobatch":
        return bcfg, {}
    mode = {"autobatch_mode": bcfg.autobatch_mode, "autobatch_mode_used": "vmap",
            "autobatch_mode_reason": "batching.autobatch_mode: vmap"}
    if bcfg.autobatch_mode == "vmap":
        return bcfg, mode
    refused, check = ragged_refusal(model, graph, mask)
    mode.update(check)
    if refused is None:
        mode.update(autobatch_mode_used="ragged", autobatch_mode_reason="the one-graph model transforms (traced "
                    "with symbolic sizes, every primitive by a rule) and matches each graph run alone on a real "
                    f"batch (largest relative difference {check['autobatch_check_max_diff']:.1e}); batches of "
                    f"{bcfg.autobatch_base}")
        log.info(f"autobatch: ragged mode, checked on {check['autobatch_check_graphs']} graphs of a real batch in "
                 f"{check['autobatch_check_s']:.1f} s (largest relative difference "
                 f"{check['autobatch_check_max_diff']:.1e})")
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
    first = train.example().arrays if method.step_form == "ragged" else None
    used, mode = resolve_autobatch(bcfg, model, first.graph if first is not None else None,
                                   first.mask if first is not None else None)
    if used is not bcfg:  # auto, and ragged refused: the slots of vmap mode
        log.info(f"autobatch: vmap mode, since {mode['autobatch_mode_reason']}")
        method, train, evals = make_loaders(used, store, targets, splits, seed=seed, shard=shard)
    return method, train, evals, mode


def autobatch_method(bcfg: BatchingConfig, model, store, train_index, targets, seed: int = 0):
    """``make_method`` with autobatch's mode resolved for ``model`` (:func:`resolve_autobatch`):
    ``(method, summary fields)``; the method's ``steps_layout`` is the step to build."""
    from gnn_batching.batching.registry import make_method

    method = make_method(bcfg, store, train_index, seed=seed)
    graph = mask = None
    if method.step_form == "ragged":
        first = next(iter(method.iterate(store, method.plan(train_index), targets))).arrays
        graph, mask = first.graph, first.mask
    used, mode = resolve_autobatch(bcfg, model, graph, mask)
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
