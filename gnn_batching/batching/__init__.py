"""Batchers: plan an epoch from size arrays (methods), gather from the store (assemble)."""

from gnn_batching.batching.assemble import Batch, GraphBatch, assemble, iterate_plan
from gnn_batching.batching.budgets import Budget, budget_from_rule
from gnn_batching.batching.loader import Loader, make_loaders
from gnn_batching.batching.methods import BatchingConfig, BatchingMethod
from gnn_batching.batching.plan import EpochPlan
from gnn_batching.batching.prefetch import Prefetcher
from gnn_batching.batching.registry import make_method, registered_methods

__all__ = [
    "Batch",
    "BatchingConfig",
    "BatchingMethod",
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
    "registered_methods",
]
