"""Loaders: a method + a split -> batches, epoch after epoch, seeded per epoch.

Training shuffles with ``np.random.default_rng([seed, epoch])``; evaluation is one ordered
pass over the split, final partial batch included. Each graph appears exactly once per epoch
(unless a documented skip policy removed it: then it is counted in ``epoch_stats``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gnn_batching.batching.assemble import Batch
from gnn_batching.batching.methods import BatchingConfig, BatchingMethod
from gnn_batching.batching.plan import EpochPlan
from gnn_batching.batching.prefetch import Prefetcher
from gnn_batching.batching.registry import make_method
from gnn_batching.batching.shard import PARALLEL_MIN_EDGES, Shard, device_plan, host_plan, iterate_steps, step_totals
from gnn_batching.study.order import STUDY_SEED, StudyOrder


class Loader:
    """Iterates one split as padded batches, epoch after epoch, in a seeded order.

    Args:
      store: the dataset's ``GraphStore``.
      targets: targets of every graph of the store, shape ``(G,)``.
      index: store indices of the split.
      method: the batching method that plans each epoch.
      shuffle: shuffle the split each epoch (seeded by ``(seed, epoch)``).
      seed: the run seed.
      pad_edges: where padding edges point (``hub`` or ``self``).
      shard: several devices (and hosts): each yielded batch then stacks this host's
        ``shard.n_local`` device batches of one step on a leading axis (``shard.py``).
      planner: where epoch plans come from instead (an object with ``plan(epoch)``, e.g. the
        study's stream, :class:`~gnn_batching.study.order.StudyOrder`); ``shuffle`` and
        ``seed`` are then unused.
    """
    def __init__(self, store, targets: np.ndarray, index: np.ndarray, method: BatchingMethod,
                 shuffle: bool, seed: int = 0, pad_edges: str = "hub", shard: Shard | None = None,
                 planner=None):
        self.store = store
        self.targets = np.asarray(targets)
        self.index = np.asarray(index, dtype=np.int64)
        self.method = method
        self.shuffle = shuffle
        self.seed = seed
        self.pad_edges = pad_edges
        self.epoch_stats: list[dict] = []
        self.planner = planner
        # how a plan becomes batches: the method's host assembly, or another assembler with its
        # signature (e.g. the device gather of train/device_store.py; one device only)
        self.assembler: Callable | None = None
        self.shard = shard if shard is not None and shard.n_global > 1 else None
        self._pool = None
        self.parallel_min_edges = PARALLEL_MIN_EDGES  # device batches this big are assembled in threads
        if self.shard is not None and self.shard.n_local > 1:
            self._pool = ThreadPoolExecutor(min(self.shard.n_local, os.cpu_count() or 1),
                                            thread_name_prefix="assemble")

    def plan(self, epoch: int) -> EpochPlan:
        """The method's plan for ``epoch`` (shuffled by ``(seed, epoch)`` if ``shuffle``), or the
        planner's."""
        if self.planner is not None:
            return self.planner.plan(epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.index) if self.shuffle else self.index
        return self.method.plan(order)

    def example(self) -> Batch:
        """The first batch of epoch 0, in this loader's form (this host's device batches stacked
        when sharded), planned without recording statistics: for shapes and dtypes (initialising
        a model, compiling ahead of time), never for training."""
        plan = self.plan(0)
        if self.shard is not None:
            plan = device_plan(plan, self.shard.n_global, self.method.common_shape)
        return next(iter(self._iterate(plan)))

    def _planned(self, epoch: int) -> EpochPlan:
        """The epoch's plan (per device step where sharded); its statistics are recorded."""
        t0 = time.perf_counter()
        plan = self.plan(epoch)
        if self.shard is not None:
            plan = device_plan(plan, self.shard.n_global, self.method.common_shape)
        plan_ms = (time.perf_counter() - t0) * 1e3
        stats = plan.stats(self.store.n_node, self.store.n_edge)
        stats.update({"epoch": epoch, "split_size": len(self.index), "plan_ms": plan_ms})
        self.epoch_stats.append(stats)
        return plan

    def _steps_of(self, plan: EpochPlan) -> int:
        return len(plan) if self.shard is None else len(plan) // self.shard.n_global

    def _iterate(self, plan: EpochPlan, skip: int = 0) -> Iterator[Batch]:
        if self.shard is None:
            assemble = self.assembler or self.method.iterate
            return assemble(self.store, plan.tail(skip) if skip else plan, self.targets, self.pad_edges)
        mine = host_plan(plan, self.shard)
        totals = step_totals(plan, self.store.n_node, self.store.n_edge, self.shard)
        if skip:
            mine = mine.tail(skip * self.shard.n_local)
            totals = totals[skip:]
        steps = iterate_steps(self.method, self.store, mine, self.targets, self.pad_edges, self.shard.n_local,
                              self._pool, self.parallel_min_edges)
        if self.shard.n_processes == 1:
            return steps
        return (dataclasses.replace(b, step_totals=tuple(int(x) for x in t)) for b, t in zip(steps, totals))

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        """Yield the padded batches of ``epoch`` in plan order.

        Every graph of the split appears exactly once (unless the method's documented skip
        policy removes it; skips are counted in the epoch statistics). With a ``shard``, one
        batch per step holding this host's device batches; the statistics are over all hosts'
        batches, empty ones that pad the last step included.
        """
        return self._iterate(self._planned(epoch))

    def forever(self, start: int = 0) -> Iterator[Batch]:
        """Training stream: epoch 0, 1, 2, ... (each a fresh seeded shuffle), from step ``start``.

        A resumed run passes the steps it has done: earlier epochs are planned (their statistics
        recorded) but not assembled, and the stream continues with exactly the batches an
        uninterrupted run would see next.
        """
        e = 0
        while True:
            plan = self._planned(e)
            n = self._steps_of(plan)
            if start >= n:
                start -= n
            else:
                yield from self._iterate(plan, start)
                start = 0
            e += 1

    def stream(self, prefetch: int = 0, transform: Callable[[Batch], Batch] | None = None,
               start: int = 0) -> Iterator[Batch]:
        """The training stream from step ``start``; with ``prefetch`` > 0, batches are assembled
        (and ``transform`` is applied, e.g. the copy to the device) ``prefetch`` batches ahead in
        a background thread."""
        it = self.forever(start)
        if prefetch <= 0:
            return it
        return Prefetcher(map(transform, it) if transform else it, prefetch)


def make_loaders(cfg: BatchingConfig, store, targets: np.ndarray, splits, seed: int = 0, shard: Shard | None = None):
    """The batching method and loaders for one run.

    Args:
        cfg: the ``batching`` config section.
        store: the dataset's ``GraphStore``.
        targets: (G,) target values, physical units.
        splits: the dataset's ``Splits`` (train/val/test index arrays).
        seed: training data order (epoch e is shuffled with ``default_rng([seed, e])``; with
            ``cfg.study_order`` the study's stream, ``random.seed(42 + seed)``).
        shard: devices and hosts of a data-parallel run (every loader then yields one stacked
            batch per step; :mod:`gnn_batching.batching.shard`).

    Returns:
        ``(method, train_loader, {"val": loader, "test": loader})``; a loader's ``epoch(e)``
        yields :class:`Batch` objects (padded ``GraphsTuple``, targets, mask, real sizes).

    Evaluation uses ``method.for_eval()``: the training layout (so shapes are shared and compile
    once) unless a skip policy is active, in which case a layout that never skips, so that every
    method is scored on every graph of the split.
    """
    method = make_method(cfg, store, splits.train, seed=seed)
    init_batch = cfg.study_first_batch == "init" or (cfg.study_first_batch == "auto" and cfg.study_order)
    planner = StudyOrder(method, splits.train, seed=STUDY_SEED + seed, init_batch=init_batch) if cfg.study_order \
        else None
    train = Loader(store, targets, splits.train, method, shuffle=True, seed=seed, pad_edges=cfg.pad_edges,
                   shard=shard, planner=planner)
    eval_method = method.for_eval()
    evals = {name: Loader(store, targets, splits.get(name), eval_method, shuffle=False, pad_edges=cfg.pad_edges,
                          shard=shard)
             for name in ("val", "test")}
    return method, train, evals
