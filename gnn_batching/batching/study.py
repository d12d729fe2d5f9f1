"""The study's batch sequence, reproduced to compare PLANNED compile counts with its counters.

The study (Speckhard et al.) fed its static batcher like this (read from its public code):

* **split**: scikit-learn's ``train_test_split`` of the dataset ids with ``random_state=0`` (its
  seed 42 minus 42): a permutation from NumPy's legacy ``RandomState(0)``, the first
  ``ceil(0.2 n)`` to validation + test, the next ``n - ceil(0.2 n)`` to training, IN THAT ORDER;
* **stream**: the training list in that order for the first pass, then Python's
  ``random.shuffle`` of the list (``random.seed(42)`` once) before every further pass; batches
  run across pass boundaries;
* **static batches**: ``batch_size - 1`` graphs are collected, and the graph that arrives when
  the batch is full is DROPPED (the batch is yielded instead of appending it), so each batch
  consumes ``batch_size`` graphs of the stream; no partial batch ever.

This reproduces the study's recompilation counters on full QM9 at 100k steps: static-2^N 3/4/1/1
(bs 16/32/64/128, exactly) and static-64 60/89/132/189 against its 60/89/128/195 (tested). Our
own runs keep our semantics (every graph once per epoch, numpy-seeded shuffles); this module is
for the comparison (``gnn-batching study plan``). NumPy and the standard library only.
"""

from __future__ import annotations

import math
import random

import numpy as np

from gnn_batching.batching.budgets import ceil_multiple, next_pow2

ROUNDINGS = {  # the study's two static methods, as our methods pad them
    "static-pow2": lambda n, e: (next_pow2(n + 1), next_pow2(e)),
    "static-64": lambda n, e: (ceil_multiple(n + 1, 64), ceil_multiple(e, 64)),
}


def study_split(n_graphs: int, holdout: float = 0.2, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The study's ``(train, holdout)`` store indices, each in the order its split returned them
    (scikit-learn ``ShuffleSplit``: one ``RandomState(random_state).permutation``)."""
    n_hold = math.ceil(holdout * n_graphs)
    perm = np.random.RandomState(random_state).permutation(n_graphs)
    return perm[n_hold:], perm[:n_hold]


def study_stream(train: np.ndarray, n: int, seed: int = 42) -> np.ndarray:
    """The first ``n`` graphs of the study's training stream: ``train`` in order, then a
    ``random.shuffle`` (Python, seeded once) of the list before every further pass."""
    data = [int(x) for x in train]
    rnd = random.Random(seed)
    parts, total = [np.asarray(data, np.int64)], len(data)
    while total < n:
        rnd.shuffle(data)
        parts.append(np.asarray(data, np.int64))
        total += len(data)
    return np.concatenate(parts)[:n]


def study_static_sums(n_node: np.ndarray, n_edge: np.ndarray, train: np.ndarray, batch_size: int, steps: int,
                      seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Real node and edge sums of the study's first ``steps`` static batches: each takes
    ``batch_size - 1`` graphs of the stream and drops the next one."""
    stream = study_stream(train, steps * batch_size, seed).reshape(steps, batch_size)[:, : batch_size - 1]
    return n_node[stream].sum(axis=1), n_edge[stream].sum(axis=1)


def planned_compiles(sum_n: np.ndarray, sum_e: np.ndarray, method: str) -> int:
    """Distinct padded shapes (= train-step compilations) of batches with these real sums."""
    nn, ne = ROUNDINGS[method](np.asarray(sum_n, np.int64), np.asarray(sum_e, np.int64))
    return len(set(zip(np.asarray(nn).tolist(), np.asarray(ne).tolist())))


def our_static_sums(method, train: np.ndarray, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The same for our own semantics: epochs shuffled with ``default_rng([seed, e])``, every graph
    once per epoch, the last partial batch of an epoch kept (the loader's order, planned only)."""
    sums_n, sums_e, done, e = [], [], 0, 0
    while done < steps:
        plan = method.plan(np.random.default_rng([seed, e]).permutation(train))
        take = min(len(plan), steps - done)
        starts = plan.bounds[:-1]
        sn = np.add.reduceat(method.n_node[plan.order], starts)[:take]
        se = np.add.reduceat(method.n_edge[plan.order], starts)[:take]
        sums_n.append(sn)
        sums_e.append(se)
        done += take
        e += 1
    return np.concatenate(sums_n), np.concatenate(sums_e)
