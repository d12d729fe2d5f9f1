"""The study's split (``dataset.split_scheme: study``): which graphs train, validate and test.

Its order matters as much as its membership: the study streamed its training list in split order
for the first pass (:mod:`gnn_batching.study.order`).
"""

from __future__ import annotations

import math

import numpy as np

from gnn_batching.data.store import Splits
from gnn_batching.errors import ConfigError


def study_splits(n: int, split: tuple[float, float, float], seed: int = 0) -> Splits:
    """The study's split (``split_scheme: study``): scikit-learn's ``train_test_split`` twice, as
    its ``get_train_val_test_split_dict`` calls it. The held-out ``val + test`` fraction is the
    first ``ceil((val + test) n)`` of ``RandomState(seed).permutation(n)`` and training the next
    ``floor((1 - val - test) n)``, IN THAT ORDER (the study streamed its training list in split
    order for the first pass); the held-out list is then split by ``RandomState(1)``, test first.
    ``seed`` is the study's ``seed - 42`` (0 for its default 42). Fractions only."""
    a, b, c = (float(x) for x in split)
    if any(isinstance(x, int) and not isinstance(x, bool) and x > 1 for x in split) or abs(a + b + c - 1.0) > 1e-6:
        raise ConfigError(f"dataset.split: split_scheme 'study' takes three fractions summing to 1, got {list(split)}")
    hold_frac = c + b
    n_hold = math.ceil(hold_frac * n)
    n_train = math.floor((1.0 - hold_frac) * n)
    perm = np.random.RandomState(seed).permutation(n)
    hold, train = perm[:n_hold], perm[n_hold : n_hold + n_train]
    n_test = math.ceil(c / hold_frac * n_hold)
    perm2 = np.random.RandomState(1).permutation(n_hold)
    test, val = hold[perm2[:n_test]], hold[perm2[n_test : n_hold]]
    if min(len(train), len(val), len(test)) < 1:
        raise ConfigError(f"dataset.split: the study's split of {list(split)} leaves an empty split of {n} graphs")
    return Splits(train=train.astype(np.int64), val=val.astype(np.int64), test=test.astype(np.int64))
