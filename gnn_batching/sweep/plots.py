"""Paper-style figures for a sweep, generalised to whatever it contains.

1. ``timing``        assembly / update / combined ms per step vs batch size (error bars = std over
                     seeds, in ms, the axis unit)
2. ``speedup``       each method's speed relative to the slowest, per batch size
3. ``compiles``      train-step compilations and compile seconds vs batch size
4. ``learning``      test RMSE / MAE vs training steps and vs graphs seen (mean over seeds)
5. ``batch_sizes``   histograms of real nodes, edges and graphs per batch, by method
6. ``fill``          node / edge / graph fill by method and batch size
7. ``significance``  Holm-adjusted p-values of pairwise tests on final test RMSE (heatmaps)
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gnn_batching.io import write_csv_atomic
from gnn_batching.sweep.results import collect, comparison
from gnn_batching.sweep.stats import pairwise_tests

MARKERS = {"static-pow2": "s", "static-64": "^", "static-max": "D", "static-exact": "x", "dynamic": "o"}


def _subplots(*args, **kwargs):
    """plt.subplots with constrained layout, so panel titles and the suptitle never collide."""
    return plt.subplots(*args, layout="constrained", **kwargs)


def _colors(methods):
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(sorted(methods))}


def _save(fig, out_dir: str, name: str, fmt: str) -> str:
    path = os.path.join(out_dir, f"{name}.{fmt}")
    tmp = os.path.join(out_dir, f".{name}.tmp.{fmt}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _panels(df):
    return sorted(df.groupby(["dataset", "model"]).groups)


def _subtitle(df) -> str:
    r = df.iloc[0]
    synth = " (SYNTHETIC data)" if df["synthetic"].any() else ""
    return f"{r['device_kind']} / {r['cpu_model']}, {int(df['steps'].max())} steps{synth}"


def plot_timing(df, out_dir, fmt):
    agg = comparison(df)
    panels = _panels(df)
    colors = _colors(df["method"].unique())
    fig, axes = _subplots(3, len(panels), figsize=(5 * len(panels), 10), squeeze=False, sharex=True)
    for j, (ds, model) in enumerate(panels):
        sub = agg[(agg["dataset"] == ds) & (agg["model"] == model)]
        for i, (col, label) in enumerate([("assembly_ms_median", "batching (assembly)"),
                                          ("update_ms_median", "update (jitted step)"),
                                          ("combined_ms_median", "combined")]):
            ax = axes[i, j]
            for m, g in sub.groupby("method"):
                g = g.sort_values("batch_size")
                ax.errorbar(g["batch_size"], g[f"{col}_mean"], yerr=g[f"{col}_std"].fillna(0), label=m,
                            marker=MARKERS.get(m, "o"), color=colors[m], capsize=3, linestyle="-")
            ax.set_xscale("log", base=2)
            ax.set_ylabel(f"{label} [ms/step]")
            ax.set_title(f"{ds} / {model}: {label}", fontsize=10)
            ax.grid(alpha=0.3)
        axes[-1, j].set_xlabel("batch size (graphs incl. padding graph)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Time per training step (median over steady-state steps; bars = std over seeds)\n{_subtitle(df)}")
    return _save(fig, out_dir, "timing", fmt)


def plot_speedup(df, out_dir, fmt):
    agg = comparison(df)
    panels = _panels(df)
    colors = _colors(df["method"].unique())
    fig, axes = _subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for j, (ds, model) in enumerate(panels):
        ax = axes[0, j]
        sub = agg[(agg["dataset"] == ds) & (agg["model"] == model)]
        sizes = sorted(sub["batch_size"].unique())
        methods = sorted(sub["method"].unique())
        w = 0.8 / len(methods)
        for k, m in enumerate(methods):
            vals = [sub[(sub["batch_size"] == b) & (sub["method"] == m)]["speedup_vs_slowest"].mean() for b in sizes]
            ax.bar(np.arange(len(sizes)) + k * w, vals, w, label=m, color=colors[m])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(sizes)) + w * (len(methods) - 1) / 2, [str(b) for b in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("speed relative to the slowest method [x]")
        ax.set_title(f"{ds} / {model}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Speedup of combined time per step over the slowest method\n{_subtitle(df)}")
    return _save(fig, out_dir, "speedup", fmt)


def plot_compiles(df, out_dir, fmt):
    agg = comparison(df)
    colors = _colors(df["method"].unique())
    fig, axes = _subplots(1, 2, figsize=(11, 4.2))
    for m, g in agg.groupby("method"):
        g = g.groupby("batch_size").mean(numeric_only=True).reset_index()
        axes[0].errorbar(g["batch_size"], g["train_step_compiles_mean"], yerr=g["train_step_compiles_std"].fillna(0),
                         marker=MARKERS.get(m, "o"), color=colors[m], label=m, capsize=3)
        axes[1].errorbar(g["batch_size"], g["compile_seconds_mean"], yerr=g["compile_seconds_std"].fillna(0),
                         marker=MARKERS.get(m, "o"), color=colors[m], label=m, capsize=3)
    for ax, lab in zip(axes, ["train-step compilations [count]", "compile time, train + eval [s]"]):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"XLA compilations per run (each distinct padded shape compiles once)\n{_subtitle(df)}")
    return _save(fig, out_dir, "compiles", fmt)


def _evals(df) -> pd.DataFrame:
    frames = []
    for _, r in df.iterrows():
        p = os.path.join(r["run_dir"], "evals.csv")
        if os.path.exists(p):
            e = pd.read_csv(p)
            for k in ("dataset", "model", "method", "batch_size", "seed"):
                e[k] = r[k]
            frames.append(e)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_learning(df, out_dir, fmt):
    ev = _evals(df)
    ev = ev[ev["split"] == "test"] if len(ev) else ev
    panels = _panels(df)
    colors = _colors(df["method"].unique())
    styles = ["-", "--", ":", "-."]
    fig, axes = _subplots(2 * len(panels), 2, figsize=(11, 7 * len(panels)), squeeze=False)
    for p, (ds, model) in enumerate(panels):
        sub = ev[(ev["dataset"] == ds) & (ev["model"] == model)] if len(ev) else ev
        sizes = sorted(df["batch_size"].unique())
        for i, metric in enumerate(["rmse", "mae"]):
            for j, x in enumerate(["step", "graphs_seen"]):
                ax = axes[2 * p + i, j]
                for (m, b), g in sub.groupby(["method", "batch_size"]) if len(sub) else []:
                    c = g.groupby(x if x == "step" else "step")[[metric, "graphs_seen"]].mean().reset_index()
                    ax.plot(c[x], c[metric], marker=".", color=colors[m], linestyle=styles[sizes.index(b) % 4],
                            label=f"{m}, bs {b}")
                ax.set_xlabel("training steps" if x == "step" else "graphs seen")
                unit = df["unit"].iloc[0]
                ax.set_ylabel(f"test {metric.upper()} [{unit}]")
                ax.ticklabel_format(axis="y", useOffset=False)
                ax.set_title(f"{ds} / {model}", fontsize=10)
                ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Test error during training (mean over seeds)\n{_subtitle(df)}")
    return _save(fig, out_dir, "learning", fmt)


def plot_batch_sizes(df, out_dir, fmt):
    sizes = sorted(df["batch_size"].unique())
    colors = _colors(df["method"].unique())
    fig, axes = _subplots(len(sizes), 3, figsize=(14, 3.2 * len(sizes)), squeeze=False)
    for i, b in enumerate(sizes):
        runs = df[(df["batch_size"] == b)].sort_values("seed").drop_duplicates(["method"])
        for _, r in runs.iterrows():
            steps = pd.read_csv(os.path.join(r["run_dir"], "steps.csv"))
            for j, (col, lab) in enumerate([("real_nodes", "real nodes"), ("real_edges", "real edges"),
                                            ("real_graphs", "real graphs")]):
                axes[i, j].hist(steps[col], bins=30, histtype="step", linewidth=1.6, color=colors[r["method"]],
                                label=r["method"])
                axes[i, j].set_xlabel(f"{lab} per batch")
                axes[i, j].set_ylabel("batches")
                axes[i, j].set_title(f"batch size {b}", fontsize=10)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Real content of training batches (one seed per method; static methods with the same seed "
                 f"hold the same graphs, so their outlines coincide)\n{_subtitle(df)}")
    return _save(fig, out_dir, "batch_sizes", fmt)


def plot_fill(df, out_dir, fmt):
    agg = comparison(df)
    methods = sorted(agg["method"].unique())
    sizes = sorted(agg["batch_size"].unique())
    colors = _colors(methods)
    fig, axes = _subplots(1, 3, figsize=(15, 4.2), sharey=True)
    w = 0.8 / len(methods)
    for ax, what in zip(axes, ["node", "edge", "graph"]):
        for k, m in enumerate(methods):
            vals = [agg[(agg["batch_size"] == b) & (agg["method"] == m)][f"{what}_fill_mean"].mean() for b in sizes]
            ax.bar(np.arange(len(sizes)) + k * w, vals, w, color=colors[m], label=m)
        ax.set_xticks(np.arange(len(sizes)) + w * (len(methods) - 1) / 2, [str(b) for b in sizes])
        ax.set_xlabel("batch size")
        ax.set_title(f"{what} fill = real / padded")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("fill [fraction]")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Padding efficiency (1.0 = no padding)\n{_subtitle(df)}")
    return _save(fig, out_dir, "fill", fmt)


def plot_significance(df, out_dir, fmt):
    tests = pairwise_tests(df)
    write_csv_atomic(os.path.join(out_dir, "significance.csv"), tests)
    groups = sorted(tests.groupby(["dataset", "model", "batch_size"]).groups) if len(tests) else []
    n = max(len(groups), 1)
    fig, axes = _subplots(2, n, figsize=(4.2 * n, 7.5), squeeze=False)
    for j, key in enumerate(groups):
        g = tests[(tests["dataset"] == key[0]) & (tests["model"] == key[1]) & (tests["batch_size"] == key[2])]
        methods = sorted(set(g["method_a"]) | set(g["method_b"]))
        for i, col in enumerate(["welch_p_holm", "mannwhitney_p_holm"]):
            mat = np.full((len(methods), len(methods)), np.nan)
            for _, r in g.iterrows():
                a, b = methods.index(r["method_a"]), methods.index(r["method_b"])
                mat[a, b] = mat[b, a] = r[col]
            ax = axes[i, j]
            im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis_r")
            ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(methods)), methods, fontsize=8)
            for a in range(len(methods)):
                for b in range(len(methods)):
                    if np.isfinite(mat[a, b]):
                        ax.text(b, a, f"{mat[a, b]:.2g}", ha="center", va="center", fontsize=7,
                                color="w" if mat[a, b] < 0.5 else "k")
            test = "Welch t" if i == 0 else "Mann-Whitney U"
            ax.set_title(f"{key[0]}/{key[1]} bs {key[2]}\n{test}, Holm-adjusted p", fontsize=9)
        fig.colorbar(im, ax=axes[:, j].tolist(), shrink=0.6, label="adjusted p")
    fig.suptitle("Does the batching method change final test RMSE? (pairwise, across seeds)")
    return _save(fig, out_dir, "significance", fmt)


def plot_all(sweep_dir: str, fmt: str = "png", df: pd.DataFrame | None = None) -> list[str]:
    """Write every figure; ``df`` is the sweep's collected table, if the caller already has it."""
    if df is None:
        df = collect(sweep_dir)
    out_dir = os.path.join(sweep_dir, "figures")
    os.makedirs(out_dir, exist_ok=True)
    fns = [plot_timing, plot_speedup, plot_compiles, plot_learning, plot_batch_sizes, plot_fill, plot_significance]
    return [fn(df, out_dir, fmt) for fn in fns]
