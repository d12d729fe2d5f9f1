"""The batching methods by name: ``batching.method`` -> strategy class.

A new method is a :class:`~gnn_batching.batching.methods.BatchingMethod` subclass registered
here (and its name added to ``config.METHOD_NAMES``, which validates configs).
"""

from __future__ import annotations

import numpy as np

from gnn_batching.batching.methods import (
    BatchingMethod,
    Buckets,
    Dynamic,
    Packed,
    Static64,
    StaticConstant,
    StaticExact,
    StaticMax,
    StaticPow2,
)
from gnn_batching.batching.slots import Autobatch
from gnn_batching.config import METHOD_NAMES, BatchingConfig
from gnn_batching.errors import ConfigError

METHODS: dict[str, type[BatchingMethod]] = {
    m.name: m for m in (StaticPow2, Static64, StaticMax, StaticExact, Dynamic, Buckets, Packed, Autobatch,
                        StaticConstant)
}
assert tuple(METHODS) == METHOD_NAMES  # the config schema validates names against this list


def methods_of(family: str) -> tuple[str, ...]:
    """Names of the registered methods of ``family`` (``study``, ``beyond`` or ``variant``)."""
    return tuple(name for name, cls in METHODS.items() if cls.family == family)


def make_method(cfg: BatchingConfig, store, train_index: np.ndarray, seed: int = 0) -> BatchingMethod:
    """Instantiate ``cfg.method`` for a GraphStore (budgets validated here, before any work).

    Raises:
      ConfigError: an unknown method name.
    """
    cls = METHODS.get(cfg.method)
    if cls is None:
        raise ConfigError(f"batching.method: unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    return cls(cfg, store.n_node, store.n_edge, train_index, ids=store.ids, seed=seed)
