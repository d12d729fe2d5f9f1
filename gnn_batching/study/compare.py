"""A sweep's numbers beside the study's own published ones (``gnn-batching study compare``).

Rows are joined on dataset, model, method, batch size and device kind (our ``cpu`` with the
study's CPU node; any GPU with its A100, named as such). The study's runs are 100k steps; ours
are as long as the sweep's: step times INCLUDING compilation depend on the run length (compiles
are amortised over more steps), so besides the absolute figures the comparison shows the ratios
between methods on each side, the study's headline quantity:

* ``static-pow2 / dynamic`` and ``static-64 / static-pow2``: mean step time including compilation
  (the study's "update" time, which included batching), per step as the study compared them;
* the same for the steady step (ours: median of steady-state steps; the study: median step).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from gnn_batching.io import write_csv_atomic
from gnn_batching.study.published import STUDY_METHODS, study_results

MODELS = {"mpeu": "MPEU", "schnet": "schnet"}
RATIOS = (("static-pow2", "dynamic"), ("static-64", "static-pow2"))


def _device(kind: str) -> str:
    return "cpu" if str(kind).lower() == "cpu" else "gpu_a100"


def _theirs(study: pd.DataFrame, dataset: str, model: str, method: str, bs: int, device: str) -> pd.DataFrame:
    kind, round64 = STUDY_METHODS[method]
    rows = study[(study["dataset"] == dataset) & (study["model"] == MODELS.get(model, model))
                 & (study["batching_type"] == kind) & (study["batch_size"] == bs) & (study["computing_type"] == device)]
    if round64 is not None:
        rows = rows[rows["batching_round_to_64"] == round64]
    return rows


def study_compare(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(rows, ratios)`` for the cells of sweep ``df`` that the study also ran (both empty if none).

    ``rows``: one per (dataset, model, bs, device, method) with ours and theirs side by side:
    steps, mean ms per step incl. compilation, steady/median ms, train compiles, test RMSE.
    ``ratios``: one per (dataset, model, bs, device, ratio) with ours and theirs on both measures.
    """
    study = study_results("100k")
    out = []
    for (ds, model, bs, dev, method), g in df.assign(device=df["device_kind"].map(_device)).groupby(
            ["dataset", "model", "batch_size", "device", "method"]):
        if method not in STUDY_METHODS:
            continue
        t = _theirs(study, ds, model, method, int(bs), dev)
        if not len(t):
            continue
        out.append({
            "dataset": ds, "model": model, "batch_size": int(bs), "device": dev, "method": method,
            "our_steps": int(g["steps"].max()), "study_steps": 100_000,
            "our_ms_incl_compile": float(g["ms_per_step_incl_compile"].mean()),
            "study_ms_incl_compile": float(t["step_100000_update_time_mean"].mean() * 1e3),
            "our_ms_steady": float(g["combined_ms_median"].mean()),
            "study_ms_median": float(t["step_100000_update_time_median"].mean() * 1e3),
            "our_compiles": float(g["train_step_compiles"].mean()),
            "study_compiles": float(t["recompilation_counter"].mean()),
            "our_test_rmse": float(g["test_rmse"].mean()), "study_test_rmse": float(t["step_100000_test_rmse"].mean()),
            "our_runs": len(g), "study_runs": len(t),
        })
    rows = pd.DataFrame(out)
    ratios = []
    if len(rows):
        for key, g in rows.groupby(["dataset", "model", "batch_size", "device"]):
            m = g.set_index("method")

            def ratio(col: str, a: str, b: str, m=m) -> float:
                return float(m.loc[a, col] / m.loc[b, col])

            for a, b in RATIOS:
                if a in m.index and b in m.index:
                    cell = dict(zip(["dataset", "model", "batch_size", "device"], key))
                    ratios.append({**cell, "ratio": f"{a} / {b}",
                                   "ours_incl_compile": ratio("our_ms_incl_compile", a, b),
                                   "study_incl_compile": ratio("study_ms_incl_compile", a, b),
                                   "ours_steady": ratio("our_ms_steady", a, b),
                                   "study_median": ratio("study_ms_median", a, b),
                                   "our_steps": int(m["our_steps"].max())})
    return rows, pd.DataFrame(ratios)


def format_study_compare(rows: pd.DataFrame, ratios: pd.DataFrame) -> str:
    """Markdown: the ratios first (comparable across run lengths), then the absolute rows."""
    if not len(rows):
        return "The study ran none of this sweep's cells (its grid: QM9/AFLOW, MPEU/SchNet, static/dynamic, bs 16-128)."
    lines = ["| dataset | model | bs | device | ms/step ratio | ours incl. compile | study incl. compile | "
             "ours steady | study median |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in ratios.iterrows():
        lines.append(f"| {r['dataset']} | {r['model']} | {r['batch_size']} | {r['device']} | {r['ratio']} | "
                     f"{r['ours_incl_compile']:.2f}x | {r['study_incl_compile']:.2f}x | {r['ours_steady']:.2f}x | "
                     f"{r['study_median']:.2f}x |")
    lines += ["", "| dataset | model | bs | device | method | steps ours / study | ms/step incl. compile ours / study "
              "| steady (median) ms ours / study | compiles ours / study | test RMSE ours / study |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        lines.append(f"| {r['dataset']} | {r['model']} | {r['batch_size']} | {r['device']} | {r['method']} | "
                     f"{r['our_steps']:,} / {r['study_steps']:,} | {r['our_ms_incl_compile']:.2f} / "
                     f"{r['study_ms_incl_compile']:.2f} | {r['our_ms_steady']:.2f} / {r['study_ms_median']:.2f} | "
                     f"{r['our_compiles']:.0f} / {r['study_compiles']:.0f} | {r['our_test_rmse']:.3f} / "
                     f"{r['study_test_rmse']:.3f} |")
    lines.append("")
    lines.append("The ratios are of time per step (ms/step, first / second: above 1 the first method is slower), "
                 "not of graphs/s. The study's times: means and medians over its 100k steps (its 'update' time, "
                 "which included batching); device `gpu_a100` is its A100 whatever GPU ran ours. Step times "
                 "including compilation depend on run length: compare the ratios across run lengths, not the "
                 "absolute figures.")
    return "\n".join(lines)


def write_study_compare(sweep_dir: str, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``study_compare.csv``, ``study_ratios.csv`` and ``figures/study_compare.png`` when the
    study ran any of the sweep's cells; returns the two tables."""
    rows, ratios = study_compare(df)
    if not len(rows):
        return rows, ratios
    write_csv_atomic(os.path.join(sweep_dir, "study_compare.csv"), rows)
    write_csv_atomic(os.path.join(sweep_dir, "study_ratios.csv"), ratios)
    if len(ratios):
        _figure(ratios, os.path.join(sweep_dir, "figures"))
    return rows, ratios


def _figure(ratios: pd.DataFrame, out_dir: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    kinds = list(dict.fromkeys(ratios["ratio"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False, layout="constrained")
    for ax, kind in zip(axes[0], kinds):
        sub = ratios[ratios["ratio"] == kind].reset_index(drop=True)
        labels = [f"{r['dataset']}/{r['model']}\nbs {r['batch_size']} {r['device']}" for _, r in sub.iterrows()]
        x = np.arange(len(sub))
        for k, (col, lab, color) in enumerate([("ours_incl_compile", f"ours incl. compile ({sub['our_steps'].max()} "
                                                "steps)", "tab:green"),
                                               ("study_incl_compile", "study incl. compile (100k steps)", "tab:gray"),
                                               ("ours_steady", "ours steady", "tab:olive"),
                                               ("study_median", "study median", "silver")]):
            ax.bar(x + (k - 1.5) * 0.2, sub[col], 0.2, label=lab, color=color)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel(f"{kind} [time per step ratio]")
        ax.set_title(kind, fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    fig.suptitle("Ours beside the study's published runs: ratios of time per step between methods")
    path = os.path.join(out_dir, "study_compare.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
