"""``gnn-batching data stats DATASET --plot PATH``: the dataset histograms the study drew (nodes and
edges per graph) plus the target's distribution over the training split."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from gnn_batching.data import Dataset


def plot_dataset(ds: Dataset, path: str) -> str:
    """Write histograms of nodes per graph, edges per graph and the training target to ``path``
    (PNG or PDF by its extension); returns ``path``."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    n_node, n_edge = ds.store.n_node, ds.store.n_edge
    for ax, values, label in ((axes[0], n_node, "nodes per graph"), (axes[1], n_edge, "edges per graph")):
        bins = np.arange(values.min(), values.max() + 2) - 0.5 if values.max() - values.min() < 80 else 60
        ax.hist(values, bins=bins, color="tab:blue")
        ax.axvline(float(values.mean()), color="k", lw=1, label=f"mean {values.mean():.1f}, max {values.max()}")
        ax.set_xlabel(label)
        ax.set_ylabel("graphs")
        ax.legend(fontsize=8, loc="upper right", frameon=False)
    target = ds.store.targets[ds.target][ds.splits.train]
    axes[2].hist(target, bins=60, color="tab:green")
    axes[2].set_xlabel(f"{ds.target}{f' [{ds.unit}]' if ds.unit else ''} (training split)")
    axes[2].set_ylabel("graphs")
    synth = " (SYNTHETIC)" if ds.synthetic else ""
    fig.suptitle(f"{ds.spec.name}{synth}: {len(ds.store):,} graphs, {ds.store.recipe.kind} graphs")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
