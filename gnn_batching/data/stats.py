"""Size and target statistics of a dataset (``gnn-batching data stats``)."""

from __future__ import annotations

import numpy as np

from gnn_batching.data.datasets import Dataset


def dataset_stats(ds: Dataset) -> dict:
    """A flat dict: counts, size distributions, target statistics and the synthetic flag."""
    st = ds.store
    out: dict = {
        "dataset": ds.spec.name,
        "graph": st.recipe.kind,
        "n_graphs": len(st),
        "n_train": len(ds.splits.train),
        "n_val": len(ds.splits.val),
        "n_test": len(ds.splits.test),
        "n_species": st.n_species,
        "species_z": st.species_z.tolist(),
        "skipped": len(st.skipped),
    }
    for key, arr in (("nodes", st.n_node), ("edges", st.n_edge)):
        a = arr.astype(np.float64)
        out.update({
            f"{key}_min": int(a.min()),
            f"{key}_mean": round(float(a.mean()), 3),
            f"{key}_median": float(np.median(a)),
            f"{key}_p90": float(np.percentile(a, 90)),
            f"{key}_p99": float(np.percentile(a, 99)),
            f"{key}_max": int(a.max()),
            f"{key}_total": int(a.sum()),
        })
    t = ds.targets()
    out.update({
        "target_name": ds.target,
        "target_unit": ds.unit,
        "target_mean": float(np.mean(t)),
        "target_std": float(np.std(t)),
        "target_min": float(np.min(t)),
        "target_max": float(np.max(t)),
        "train_mean": ds.stats.mean,
        "train_std": ds.stats.std,
        "synthetic": bool(ds.synthetic),
    })
    return out


def format_stats(d: dict) -> str:
    lines = [f"{d['dataset']}{'  [SYNTHETIC DATA]' if d['synthetic'] else ''}  ({d['graph']} graphs)",
             f"  graphs   {d['n_graphs']:>10,}   train/val/test {d['n_train']:,}/{d['n_val']:,}/{d['n_test']:,}"
             f"   species {d['species_z']}   skipped {d['skipped']}"]
    for key in ("nodes", "edges"):
        lines.append(
            f"  {key:<8} min {d[f'{key}_min']:>6}  mean {d[f'{key}_mean']:>8.1f}  median {d[f'{key}_median']:>7.1f}"
            f"  p90 {d[f'{key}_p90']:>7.1f}  p99 {d[f'{key}_p99']:>7.1f}  max {d[f'{key}_max']:>6}"
        )
    lines.append(
        f"  target   {d['target_name']}{f' [{u}]' if (u := d['target_unit']) else ' (no unit given)'}  mean {d['target_mean']:.4g}  std {d['target_std']:.4g}"
        f"  range [{d['target_min']:.4g}, {d['target_max']:.4g}]"
    )
    return "\n".join(lines)
