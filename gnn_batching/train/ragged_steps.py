"""Autobatch's ragged mode as steps: the model written for ONE graph, re-interpreted on a padded
disjoint union (:mod:`gnn_batching.ragged`), summed over the real graphs like every layout."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from gnn_batching.data.store import TargetStats
from gnn_batching.ragged import from_batch, ragged_loss


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
