"""Batchers: plan an epoch from size arrays (methods), gather from the store (assemble)."""

from gnn_batching.batching.assemble import Batch, GraphBatch, assemble, iterate_plan
from gnn_batching.batching.budgets import Budget, budget_from_rule
from gnn_batching.batching.loader import Loader, make_loaders
from gnn_batching.batching.methods import METHOD_NAMES, METHODS, BatchingConfig, EpochPlan, make_method
from gnn_batching.batching.prefetch import Prefetcher

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "Batch",
    "BatchingConfig",
    "Budget",
    "EpochPlan",
    "GraphBatch",
    "Loader",
    "Prefetcher",
    "assemble",
    "budget_from_rule",
    "iterate_plan",
    "make_loaders",
    "make_method",
]
