"""The batching methods by name: ``batching.method`` -> strategy class.

A method is a :class:`~gnn_batching.batching.methods.BatchingMethod` subclass registered with
``@register_method`` (:mod:`gnn_batching.plugins`) in its own file, the package's and the
user's alike; the config validates names and options against that registry. Before a run uses
a method, :func:`make_method` plans one epoch and refuses a plan that drops, repeats or
overfills graphs, naming the method and where it was defined.
"""

from __future__ import annotations

import numpy as np

from gnn_batching.batching.methods import BatchingMethod
from gnn_batching.batching.plan import EpochPlan
from gnn_batching.config import BatchingConfig
from gnn_batching.errors import ConfigError
from gnn_batching.plugins import _origin, method_class, method_names


def registered_methods() -> dict[str, type[BatchingMethod]]:
    """Every registered method: name -> class (the package's, then the user's)."""
    return {name: method_class(name) for name in method_names()}


def methods_of(family: str) -> tuple[str, ...]:
    """Names of the registered methods of ``family`` (``study``, ``beyond`` or ``variant``)."""
    return tuple(name for name, cls in registered_methods().items() if cls.family == family)


def make_method(cfg: BatchingConfig, store, train_index: np.ndarray, seed: int = 0) -> BatchingMethod:
    """Instantiate ``cfg.method`` for a GraphStore (budgets validated here, before any work), and
    check its plan of one shuffled epoch (:func:`check_plan`).

    Raises:
      ConfigError: an unknown method name, or a plan that breaks the contract.
    """
    cls = method_class(cfg.method)
    if cfg.method == "autobatch" and cfg.autobatch_mode != "vmap":
        # ragged autobatch runs on another method's disjoint-union batches (the step decides)
        from dataclasses import replace

        base = method_class(cfg.autobatch_base)
        method = base(replace(cfg, method=cfg.autobatch_base), store.n_node, store.n_edge, train_index, ids=store.ids,
                      seed=seed)
        method.step_form = "ragged"
    else:
        method = cls(cfg, store.n_node, store.n_edge, train_index, ids=store.ids, seed=seed)
    if len(train_index):
        order = np.random.default_rng([seed, 987654321]).permutation(np.asarray(train_index, dtype=np.int64))
        check_plan(method, method.plan(order), order)
    return method


def check_plan(method: BatchingMethod, plan: EpochPlan, order: np.ndarray) -> None:
    """Refuse a plan that is not a batching of ``order``: every graph in exactly one batch or in
    ``skipped`` (never both, never twice, never one that was not asked for), cut points from 0 to
    the end, one padded shape per batch, and (one disjoint-union batch per step) every batch
    within its shape: nodes >= real + 1 (the padding graph's node), edges >= real, graphs >= real + 1.

    Raises:
      ConfigError: naming the method, the file that defines it and the first problem found.
    """
    where = f"batching.method {method.name!r} ({type(method).__qualname__}, {_origin(type(method))})"

    def fail(problem: str) -> None:
        raise ConfigError(f"{where}: its plan of an epoch {problem}; a method must put every graph of the epoch in "
                          "exactly one batch (or in EpochPlan.skipped, counted) and pad each batch to at least its "
                          "size")

    if not isinstance(plan, EpochPlan):
        fail(f"is a {type(plan).__name__}, not an EpochPlan")
    bounds, shapes = np.asarray(plan.bounds), np.asarray(plan.shapes)
    planned = np.concatenate([np.asarray(plan.order, dtype=np.int64), np.asarray(plan.skipped, dtype=np.int64)])
    want = np.sort(np.asarray(order, dtype=np.int64))
    got = np.sort(planned)
    if len(got) != len(want) or not np.array_equal(got, want):
        uniq, counts = np.unique(planned, return_counts=True)
        if (counts > 1).any():
            fail(f"uses graph {int(uniq[counts > 1][0])} {int(counts.max())} times")
        missing = np.setdiff1d(want, planned)
        if len(missing):
            fail(f"leaves out {len(missing)} of {len(want)} graphs (e.g. store index {int(missing[0])})")
        fail(f"holds {len(np.setdiff1d(planned, want))} graphs that the epoch did not ask for")
    if bounds.ndim != 1 or len(bounds) < 1 or bounds[0] != 0 or bounds[-1] != len(plan.order) or (
            np.diff(bounds) < 0).any():
        fail("has cut points that do not run from 0 to the end in order")
    if shapes.ndim != 2 or shapes.shape != (len(bounds) - 1, 3):
        fail(f"has shapes of shape {shapes.shape}, not one (n_node, n_edge, n_graph) row per batch "
             f"({len(bounds) - 1})")
    if method.layout != "disjoint-union" or len(shapes) == 0:
        return
    real_n, real_e, real_g = plan.real_sizes(method.n_node, method.n_edge)
    bad = (shapes[:, 0] < real_n + 1) | (shapes[:, 1] < real_e) | (shapes[:, 2] < real_g + 1)
    if bad.any():
        b = int(np.flatnonzero(bad)[0])
        fail(f"pads batch {b} ({int(real_g[b])} graphs, {int(real_n[b])} nodes, {int(real_e[b])} edges) to "
             f"{tuple(int(x) for x in shapes[b])}, too small (nodes need one more for the padding graph, graphs too)")
