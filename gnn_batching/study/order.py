"""The study's training sequence (``batching.study_order``), read from its public code.

The study (Speckhard et al.) fed its batchers like this:

* **split** (``dataset.split_scheme: study``, :func:`gnn_batching.study.split.study_splits`):
  scikit-learn's ``train_test_split``, the training list in the order the split returned it;
* **stream**: the training list in that order for the first pass, then Python's
  ``random.shuffle`` of the list (``random.seed(42)`` once, then one shuffle per further pass);
  batches run across pass boundaries;
* **static batches**: ``batch_size - 1`` graphs are collected, and the graph that arrives when
  the batch is full is DROPPED (the batch is yielded instead), so each batch consumes
  ``batch_size`` graphs of the stream; no partial batch ever;
* **first batch**: the reader's batch 0 initialises the model's parameters and the training loop
  starts from batch 1 (``batching.study_first_batch``: ``init``, the default under study order;
  the batch's graphs are counted as skipped);
* **dynamic batches**: jraph's ``dynamically_batch`` over the same stream (next fit; the graph
  that overflows opens the next batch).

:class:`StudyOrder` turns that stream into the loader's epoch plans: "epoch" ``e`` is the batches
that START in pass ``e``, planned by the method's own :meth:`~gnn_batching.batching.methods.BatchingMethod.plan_stream`
(its stream semantics), so the loader, the resume path and the statistics work unchanged. Over
100k steps on full QM9 this reproduces the study's recompilation counters (static-pow2 3/4/1/1
exactly, static-64 60/89/132/189 against its 60/89/128/195; ``gnn-batching study plan``).
NumPy and the standard library only.
"""

from __future__ import annotations

import random

import numpy as np

from gnn_batching.batching.plan import EpochPlan
from gnn_batching.errors import ConfigError

STUDY_SEED = 42  # the study's default seed: its stream's random.seed and (minus 42) its split's random_state


class StudyOrder:
    """The study's training stream as epoch plans for a :class:`~gnn_batching.batching.loader.Loader`.

    Args:
      method: the batching method (its ``plan_stream`` gives the study's batch semantics).
      train: training store indices in split order (the first pass).
      seed: Python ``random.seed`` of the stream (the study: 42 for every run).

    Plans are made in pass order and cached by their start positions; asking for an earlier
    epoch again replays the stream from its start (deterministic, only slower).
    """

    def __init__(self, method, train: np.ndarray, seed: int = STUDY_SEED, init_batch: bool = False):
        self.method = method
        self.train = [int(x) for x in np.asarray(train, dtype=np.int64)]
        self.n = len(self.train)
        if self.n < 2 * int(method.bs):
            raise ConfigError(f"batching.study_order: the training split ({self.n} graphs) must hold at least two "
                              f"batches of batching.batch_size {method.bs}")
        self.seed = int(seed)
        self.init_batch = bool(init_batch)  # the first batch initialises the model and is not trained on
        self._starts = [0]  # stream position of the first batch that starts in pass e
        self._reset()

    def _reset(self) -> None:
        self._rnd = random.Random(self.seed)
        self._list = list(self.train)
        self._at = 0
        self._cache = {0: np.asarray(self._list, np.int64)}

    def pass_order(self, p: int) -> np.ndarray:
        """Store indices of pass ``p`` of the stream (pass 0: the split order)."""
        if p < self._at - 1:
            self._reset()
        while self._at < p:
            self._rnd.shuffle(self._list)
            self._at += 1
            self._cache = {k: v for k, v in self._cache.items() if k >= self._at - 1}
            self._cache[self._at] = np.asarray(self._list, np.int64)
        return self._cache[p]

    def stream(self, n: int) -> np.ndarray:
        """The first ``n`` store indices of the stream."""
        parts, total, p = [], 0, 0
        while total < n:
            parts.append(self.pass_order(p))
            total += self.n
            p += 1
        return np.concatenate(parts)[:n]

    def plan(self, epoch: int) -> EpochPlan:
        """The batches that start in pass ``epoch`` (they may end in the next pass)."""
        while len(self._starts) <= epoch:
            self.plan(len(self._starts) - 1)
        lo = self._starts[epoch]
        base = epoch * self.n
        window = np.concatenate([self.pass_order(epoch), self.pass_order(epoch + 1)])[lo - base:]
        plan, used = self.method.plan_stream(window, base + self.n - lo)
        if len(self._starts) == epoch + 1:
            self._starts.append(lo + used)
        if epoch == 0 and self.init_batch and len(plan) > 1:  # the study's reader batch 0 only initialises
            first = plan.batch(0)
            rest = plan.tail(1)
            return EpochPlan(rest.order, rest.bounds, rest.shapes, np.concatenate([plan.skipped, first]),
                             rest.groups)
        return plan


def planned_compiles(shapes: np.ndarray) -> int:
    """Distinct padded shapes (= train-step compilations) among ``(k, 3)`` planned shapes."""
    return len({tuple(s) for s in np.asarray(shapes).tolist()})


def planned_shapes(plans, steps: int) -> np.ndarray:
    """The padded shapes of the first ``steps`` batches of a sequence of epoch plans."""
    out, done = [], 0
    for plan in plans:
        take = min(len(plan), steps - done)
        out.append(plan.shapes[:take])
        done += take
        if done >= steps:
            break
    return np.concatenate(out) if out else np.zeros((0, 3), np.int64)
