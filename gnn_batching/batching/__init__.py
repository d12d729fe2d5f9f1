"""Batchers: plan an epoch from size arrays (methods), gather from the store (assemble).

Most names below are loaded on first use: importing one module of this package (``batching.plan``,
say, from :mod:`gnn_batching.study.order`) does not import the loader, so the loader may import
the study's order without a cycle through this file. ``assemble`` (the function) is bound here at
once: a lazy name equal to a submodule's would be shadowed by that submodule once it is imported.
"""

from __future__ import annotations

import importlib

from gnn_batching.batching.assemble import Batch, GraphBatch, assemble, iterate_plan  # leaves: plan, numpy, jraph

_LAZY = {
    "Budget": "budgets", "budget_from_rule": "budgets",
    "Loader": "loader", "make_loaders": "loader",
    "BatchingConfig": "methods", "BatchingMethod": "methods",
    "EpochPlan": "plan",
    "Prefetcher": "prefetch",
    "make_method": "registry", "registered_methods": "registry",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Batch", "BatchingConfig", "BatchingMethod", "Budget", "EpochPlan", "GraphBatch", "Loader", "Prefetcher",
           "assemble", "budget_from_rule", "iterate_plan", "make_loaders", "make_method", "registered_methods"]
