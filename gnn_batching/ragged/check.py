"""The last line of defence: on a real batch, the union program against each graph run ALONE,
values and gradients, before a run trusts ragged mode."""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnn_batching.ragged.levels import Refused
from gnn_batching.ragged.loss import ragged_loss
from gnn_batching.ragged.union import from_batch, one_graph

TOLERANCE = 1e-4  # largest relative difference (per leaf, against its largest magnitude) accepted
# the check's two small programs run once: compiled without LLVM's optimisations on the CPU (a
# third of the compile time; the programs run a few milliseconds longer)
FAST_COMPILE = {"xla_backend_optimization_level": 0}


class CheckResult(NamedTuple):
    """What the check compared and found."""

    max_diff: float  # largest relative difference over the values and every gradient leaf
    graphs: tuple  # the graph slots compared (smallest and largest first)
    seconds: float  # wall time of the check, compiles included


def pick_graphs(n_node: np.ndarray, n_edge: np.ndarray, real: np.ndarray, k: int = 4, seed: int = 0) -> list[int]:
    """Up to ``k`` real graph slots: the smallest and largest by nodes and by edges, then random
    others (seeded)."""
    slots = np.flatnonzero(real)
    if not len(slots):
        return []
    picked: list[int] = []
    for order in (n_node[slots], n_edge[slots]):
        for i in (int(slots[np.argmin(order)]), int(slots[np.argmax(order)])):
            if i not in picked:
                picked.append(i)
    rest = [int(i) for i in np.random.default_rng(seed).permutation(slots) if int(i) not in picked]
    return (picked + rest)[:k]


def random_params(shapes, seed: int = 0):
    """Parameters of the given shapes (a pytree of ``ShapeDtypeStruct``), drawn without compiling
    anything: normal with a fan-in scale for matrices, 0.1 for vectors, zeros for integers. The
    check compares two programs at one point; any finite point will do."""
    rng = np.random.default_rng(seed)

    def one(s):
        if not jnp.issubdtype(s.dtype, jnp.inexact):
            return jnp.zeros(s.shape, s.dtype)
        scale = 1.0 / np.sqrt(max(s.shape[-2], 1)) if len(s.shape) >= 2 else 0.1
        return jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype)

    return jax.tree_util.tree_map(one, shapes)


def _jit(fn):
    """``jax.jit`` with :data:`FAST_COMPILE` on the CPU (other backends: their defaults)."""
    if jax.default_backend() == "cpu":
        return jax.jit(fn, compiler_options=FAST_COMPILE)
    return jax.jit(fn)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not a.size:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    if np.isnan(diff).any():
        return float("inf")
    scale = max(float(np.nanmax(np.abs(b))) if np.isfinite(b).any() else 0.0, 1e-6)
    return float(diff.max() / scale)


def check_batch(fn, params, graph, mask=None, per_graph: tuple = (), k: int = 3, seed: int = 0,
                tolerance: float = TOLERANCE) -> CheckResult:
    """Runs ``fn`` (a one-graph function ``fn(params, graph, *rows) -> scalar``) on a real padded
    batch through the union program and on ``k`` of its graphs ALONE (the smallest and the
    largest by nodes, the smallest by edges, ...), and compares their values and the gradient of
    a random positive weighting of them with respect to ``params``.

    Raises:
      Refused: a difference above ``tolerance`` (stating the largest), or any error on the way.
    """
    t0 = time.perf_counter()
    host = jax.tree_util.tree_map(np.asarray, graph)
    n_node, n_edge = np.asarray(host.n_node), np.asarray(host.n_edge)
    real = np.asarray(mask, bool) if mask is not None else n_node > 0
    picked = pick_graphs(n_node, n_edge, real, k=k, seed=seed)
    if not picked:
        return CheckResult(0.0, (), time.perf_counter() - t0)
    rows = [tuple(np.asarray(x)[i] for x in per_graph) for i in picked]
    weights = np.random.default_rng(seed + 1).uniform(0.5, 1.5, len(picked)).astype(np.float32)
    union, n_graph = from_batch(host, real)
    alone_graphs = [one_graph(host, i) for i in picked]
    sel = np.asarray(picked)
    w = weights

    def on_union(p):
        vals = ragged_loss(fn, p, union, n_graph, *per_graph)[sel]
        return jnp.sum(w * vals), vals

    def on_each(p):
        vals = jnp.stack([jnp.asarray(fn(p, g, *r), jnp.float32).reshape(()) for g, r in zip(alone_graphs, rows)])
        return jnp.sum(w * vals), vals

    try:
        (_, v_union), g_union = _jit(jax.value_and_grad(on_union, has_aux=True))(params)
        (_, v_each), g_each = _jit(jax.value_and_grad(on_each, has_aux=True))(params)
    except Refused:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise Refused(f"ragged: the check on a real batch failed ({type(exc).__name__}: {first})") from exc
    diffs = [_rel(v_union, v_each)]
    diffs += [_rel(a, b) for a, b in zip(jax.tree_util.tree_leaves(g_union), jax.tree_util.tree_leaves(g_each))]
    worst = max(diffs)
    seconds = time.perf_counter() - t0
    if not worst <= tolerance:
        raise Refused(f"ragged: on a real batch the union program differs from each graph run alone by {worst:.3g} "
                      f"(relative; graphs {picked}, tolerance {tolerance:g})")
    return CheckResult(worst, tuple(picked), seconds)
