"""Data parallelism, host side: an epoch's plan split over devices and hosts (NumPy only).

With ``D`` devices per host and ``H`` hosts, a training step consumes ``G = H x D`` planned
batches, one per device. :func:`device_plan` groups the method's plan into steps of ``G``
consecutive batches and pads the last step with EMPTY batches (no real graph, all padding, mask
False everywhere), so every graph is used exactly once per epoch. The batches of one step must
share one padded shape (one SPMD program); each step's shape is the method's
:meth:`~gnn_batching.batching.methods.BatchingMethod.common_shape` of its batches' shapes (the
elementwise maximum, which for the study's rounding rules is again a shape of the same rule;
``buckets`` takes the smallest menu shape covering it, so nothing outside its menu is compiled).

Every host computes the same plan (same seed, same sizes) and keeps its own share
(:func:`host_plan`): step ``s``'s batches ``s*G + h*D ... s*G + h*D + D - 1`` belong to host
``h``. The host assembles its ``D`` batches (in parallel threads) and :func:`stack_batches` puts
them on a leading device axis; the device side places that axis on the mesh
(:mod:`gnn_batching.train.parallel`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from gnn_batching.batching.assemble import Batch
from gnn_batching.batching.plan import EpochPlan


@dataclass(frozen=True)
class Shard:
    """Where this process sits: ``n_local`` devices on host ``process_index`` of ``n_processes``."""

    n_local: int = 1
    process_index: int = 0
    n_processes: int = 1

    def __post_init__(self) -> None:
        if self.n_local < 1 or self.n_processes < 1 or not 0 <= self.process_index < self.n_processes:
            raise ValueError(f"invalid shard {self}")

    @property
    def n_global(self) -> int:
        """Devices over all hosts: batches per training step."""
        return self.n_local * self.n_processes


def device_plan(plan: EpochPlan, n_global: int, common_shape: Callable[[np.ndarray], tuple[int, int, int]]
                ) -> EpochPlan:
    """``plan`` in steps of ``n_global`` batches with one shape per step, the last step padded with
    empty batches.

    Args:
      plan: the method's plan for one epoch.
      n_global: batches per step (devices over all hosts).
      common_shape: ``(k, 3)`` shapes of one step's batches -> the shape all of them get.

    Returns:
      A plan of ``ceil(B / n_global) * n_global`` batches over the same ``order`` (the same
      graphs, each once), ``shapes`` equal within every step.
    """
    b = len(plan)
    steps = -(-b // n_global)
    extra = steps * n_global - b
    bounds = np.concatenate([plan.bounds, np.full(extra, plan.bounds[-1], np.int64)])
    shapes = np.array(plan.shapes, np.int64).reshape(-1, 3)  # a copy: the method's plan stays as planned
    if extra:  # empty batches take the step's shape below
        shapes = np.concatenate([shapes, np.repeat(shapes[-1:], extra, axis=0)])
    for s in range(steps):
        block = shapes[s * n_global : (s + 1) * n_global]
        if len(block) > 1 and not (block == block[0]).all():
            block[:] = np.asarray(common_shape(block), np.int64)
    return EpochPlan(plan.order, bounds, shapes, plan.skipped, plan.groups)


def step_totals(plan: EpochPlan, n_node: np.ndarray, n_edge: np.ndarray, shard: Shard) -> np.ndarray:
    """Per step of a :func:`device_plan`: real graphs, nodes, edges and padded sizes over EVERY
    host's devices, shape ``(steps, 6)``. Every host plans the same epoch, so each knows the
    whole step's sizes without communicating; a host's records then count the run, not its share.
    """
    cum_n = np.concatenate([[0], np.cumsum(n_node[plan.order])])
    cum_e = np.concatenate([[0], np.cumsum(n_edge[plan.order])])
    lo, hi = plan.bounds[:-1], plan.bounds[1:]
    per_batch = np.column_stack([hi - lo, cum_n[hi] - cum_n[lo], cum_e[hi] - cum_e[lo],
                                 np.asarray(plan.shapes, np.int64).reshape(-1, 3)])
    return per_batch.reshape(-1, shard.n_global, 6).sum(axis=1)


def host_plan(plan: EpochPlan, shard: Shard) -> EpochPlan:
    """This host's batches of a :func:`device_plan`, in step order (``n_local`` per step)."""
    g, d, h = shard.n_global, shard.n_local, shard.process_index
    keep = np.flatnonzero((np.arange(len(plan)) % g) // d == h)
    parts = [plan.batch(int(b)) for b in keep]
    sizes = np.array([len(p) for p in parts], np.int64)
    order = np.concatenate(parts) if parts else plan.order[:0]
    groups = None
    if plan.groups is not None:
        groups = np.concatenate([plan.groups[plan.bounds[b] : plan.bounds[b + 1]] for b in keep]) if len(keep) \
            else plan.groups[:0]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return EpochPlan(order, bounds, plan.shapes[keep], plan.skipped, groups)


def single_batch(plan: EpochPlan, b: int) -> EpochPlan:
    """Batch ``b`` of ``plan`` as a plan of its own (so a method can assemble it alone)."""
    lo, hi = int(plan.bounds[b]), int(plan.bounds[b + 1])
    groups = plan.groups[lo:hi] if plan.groups is not None else None
    return EpochPlan(plan.order[lo:hi], np.array([0, hi - lo], np.int64), plan.shapes[b : b + 1], groups=groups)


def _stack_tree(trees: list):
    """Stack same-structured trees of (named) tuples, ``None`` and arrays along a new axis 0."""
    first = trees[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        parts = [_stack_tree([t[i] for t in trees]) for i in range(len(first))]
        return type(first)(*parts) if hasattr(first, "_fields") else tuple(parts)
    return np.stack(trees)


def stack_batches(batches: list[Batch]) -> Batch:
    """One device batch per entry -> one batch whose arrays have a leading device axis.

    Real sizes and the padded shape are summed over devices (so fill = real / padded stays the
    fraction of the work that is real); ``index`` is device by device.
    """
    arrays = _stack_tree([b.arrays for b in batches])
    padded = np.sum([b.shape for b in batches], axis=0).tolist()
    return Batch(arrays, sum(b.n_real_graphs for b in batches), sum(b.n_real_nodes for b in batches),
                 sum(b.n_real_edges for b in batches), np.concatenate([b.index for b in batches]),
                 padded=tuple(int(x) for x in padded))


# A step's device batches are assembled in parallel threads only when they are this big (padded
# edges per device batch): below it, thread hand-off costs more than it saves. Measured with
# `gnn-batching bench batching --dataset qm9 --devices 4 --batch-sizes 32 128 512` on a 2-core
# CPU, threads vs one after another: bs 32 (10-33k padded edges) 0.41-0.63x, bs 128 (40-131k)
# 0.93-0.94x, bs 512 (160-260k) 1.06-1.21x.
PARALLEL_MIN_EDGES = 150_000


def iterate_steps(method, store, plan: EpochPlan, targets: np.ndarray, pad_edges: str, n_local: int,
                  pool=None, min_edges: int = PARALLEL_MIN_EDGES) -> Iterator[Batch]:
    """Assemble a :func:`host_plan` ``n_local`` batches at a time and stack each step's batches.

    With a thread pool (``concurrent.futures``), the batches of a step with at least
    ``min_edges`` padded edges per device are assembled in parallel (NumPy's gathers release
    the GIL).
    """

    def one(b: int) -> Batch:
        return next(iter(method.iterate(store, single_batch(plan, b), targets, pad_edges)))

    for s in range(0, len(plan), n_local):
        ids = range(s, min(s + n_local, len(plan)))
        big = pool is not None and int(plan.shapes[s, 1]) >= min_edges
        parts = list(pool.map(one, ids)) if big else [one(b) for b in ids]
        yield stack_batches(parts)
