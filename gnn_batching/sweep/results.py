"""Collect a sweep into one tidy table (one row per finished run) and compare methods.

``results.csv`` / ``results.parquet`` hold every grid axis (as ``axis:<key>`` columns) and
every summary metric. They are rebuilt from the run directories each time (atomically), so an
interrupted sweep can never leave duplicate or missing rows.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pandas as pd

from gnn_batching.errors import UserError
from gnn_batching.io import write_csv_atomic

GROUP = ["dataset", "model", "batch_size"]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def collect(sweep_dir: str, write: bool = True) -> pd.DataFrame:
    from gnn_batching.sweep.sweep import sweep_info

    info = sweep_info(sweep_dir)
    rows = []
    for path in sorted(glob.glob(os.path.join(sweep_dir, "runs", "*", "summary.json"))):
        run_dir = os.path.dirname(path)
        try:
            with open(path, encoding="utf-8") as fh:
                s = json.load(fh)
        except (OSError, ValueError):
            continue  # cannot happen with atomic writes; never let one bad file hide the rest
        import yaml

        with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as fh:
            cfg = _flatten(yaml.safe_load(fh) or {})
        row = {"cell": os.path.basename(run_dir)}
        for k in info.get("grid", {}):
            v = cfg.get(k)
            row[f"axis:{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
        row.update(s)
        rows.append(row)
    if not rows:
        raise UserError(f"{sweep_dir}: no finished runs yet")
    df = pd.DataFrame(rows)
    if write:
        write_csv_atomic(os.path.join(sweep_dir, "results.csv"), df)
        tmp = os.path.join(sweep_dir, ".results.parquet.tmp")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, os.path.join(sweep_dir, "results.parquet"))
    return df


def comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, batch size, method): mean and std over seeds, and the speedup over
    the slowest method of the same (dataset, model, batch size), from combined ms/step."""
    metrics = ["combined_ms_median", "assembly_ms_median", "update_ms_median", "graphs_per_s",
               "train_step_compiles", "compile_seconds", "node_fill", "edge_fill", "graph_fill",
               "real_graphs_per_batch_mean", "test_rmse", "test_mae"]
    metrics = [m for m in metrics if m in df]
    g = df.groupby(GROUP + ["method"])
    agg = g[metrics].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg["n_seeds"] = g.size()
    agg = agg.reset_index()
    slowest = agg.groupby(GROUP)["combined_ms_median_mean"].transform("max")
    agg["speedup_vs_slowest"] = slowest / agg["combined_ms_median_mean"]
    fastest_gps = agg.groupby(GROUP)["graphs_per_s_mean"].transform("min")
    agg["throughput_vs_slowest"] = agg["graphs_per_s_mean"] / fastest_gps
    return agg


def _pm(mean: float, std: float, fmt: str) -> str:
    if std is None or not np.isfinite(std):
        return fmt.format(mean)
    return f"{fmt.format(mean)}±{fmt.format(std)}"


def format_comparison(df: pd.DataFrame, markdown: bool = False) -> str:
    agg = comparison(df)
    head = ["dataset", "model", "bs", "method", "ms/step", "graphs/s", "speedup", "compiles", "node fill",
            "edge fill", "graphs/batch", "test RMSE", "test MAE", "seeds"]
    rows = []
    for _, r in agg.sort_values(GROUP + ["combined_ms_median_mean"]).iterrows():
        rows.append([
            str(r["dataset"]), str(r["model"]), str(r["batch_size"]), str(r["method"]),
            _pm(r["combined_ms_median_mean"], r["combined_ms_median_std"], "{:.2f}"),
            _pm(r["graphs_per_s_mean"], r["graphs_per_s_std"], "{:.0f}"),
            f"{r['speedup_vs_slowest']:.2f}x",
            _pm(r["train_step_compiles_mean"], r["train_step_compiles_std"], "{:.1f}"),
            f"{r['node_fill_mean']:.3f}", f"{r['edge_fill_mean']:.3f}",
            f"{r['real_graphs_per_batch_mean_mean']:.1f}",
            _pm(r["test_rmse_mean"], r["test_rmse_std"], "{:.3f}"),
            _pm(r["test_mae_mean"], r["test_mae_std"], "{:.3f}"),
            str(int(r["n_seeds"])),
        ])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    note = "ms/step = median combined (assembly + update) time per steady-state step; ± = std over seeds;\n" \
           "speedup = slowest method's ms/step / this method's, within the same dataset, model and batch size."
    if "synthetic" in df and df["synthetic"].any():
        note += "\nSome rows use SYNTHETIC data."
    return "\n".join(lines) + "\n" + note
