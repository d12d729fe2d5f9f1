"""Data: sources -> StructureSet -> graphs -> GraphStore (cached) -> Dataset (splits, stats)."""

from gnn_batching.data.datasets import (
    Dataset,
    DatasetSpec,
    dataset_names,
    load_dataset,
    load_store,
    register_dataset,
)
from gnn_batching.data.graphs import GraphRecipe
from gnn_batching.data.store import GraphStore, Splits, TargetStats

__all__ = [
    "Dataset",
    "DatasetSpec",
    "GraphRecipe",
    "GraphStore",
    "Splits",
    "TargetStats",
    "dataset_names",
    "load_dataset",
    "load_store",
    "register_dataset",
]
