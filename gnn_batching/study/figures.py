"""The study's figures, drawn from any sweep's records as the study drew them (its plotting
scripts in its public repository, ``scripts/plotting/``):

1. ``study_timing``       MEAN batching / update / combined time per step INCLUDING compilation
                          against batch size, AFLOW left and QM9 right, and its per-step speedup bars
2. ``study_time_series``  the combined time per step averaged over each twentieth of the run
                          (its "running average" over 2M steps in 100k-step windows), per method
3. ``study_significance`` its t-test heatmaps: Student's t statistic (-3..3) and its p-value for
                          every pair of methods on final test RMSE, uncorrected (ours, Welch and
                          Mann-Whitney with Holm's correction, stays in ``significance``)
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from gnn_batching.rundir import STEPS
from gnn_batching.sweep.plots import (
    LINESTYLES,
    _by_cell,
    _legend,
    _log2_x,
    _per_run,
    _ratio_axes,
    _save,
    _Styles,
    _subplots,
    _subtitle,
    _text_colour,
)
from gnn_batching.sweep.results import extra_axes, variant

STUDY_ORDER = ("dynamic", "static-pow2", "static-64")  # the order of its heatmaps' rows and columns
# our name first, the study's own label beside it (one name per method everywhere)
STUDY_LABEL = {"static-pow2": "static-pow2 (study: static-$2^N$)"}
WINDOWS = 20  # its running average: 2M steps in windows of 100k

def _mean_step_times(df: pd.DataFrame) -> pd.DataFrame:
    """Per run: MEAN batching, update and combined ms over ALL its steps, compiling ones included
    (the study's measure), from ``steps.csv``; then mean and std over seeds per variant."""
    steps = _per_run(df, STEPS)
    keys = ["dataset", "model", "batch_size", "variant"]
    per_run = steps.groupby([*keys, "seed"])[["assembly_ms", "update_ms", "combined_ms"]].mean().reset_index()
    return per_run.groupby(keys)[["assembly_ms", "update_ms", "combined_ms"]].agg(["mean", "std"]).reset_index()


def plot_study_timing(df, out_dir, fmt):
    """The study's timing figure: MEAN time per step INCLUDING compilation (its measure), batching
    / update / combined in rows, one column per dataset (AFLOW left, QM9 right, as it drew them),
    one line per model and method; and its per-step speedup bars (static-pow2 over dynamic,
    static-64 over static-pow2, ratios of those means) under them."""
    times = _mean_step_times(df)
    style = _Styles(df)
    datasets = sorted(times["dataset"].unique(), key=lambda d: (d not in ("aflow", "aflow-synthetic"), d))
    models = sorted(times["model"].unique())
    fig, axes = _subplots(4, len(datasets), figsize=(5.5 * len(datasets), 13), squeeze=False)
    for j, ds in enumerate(datasets):
        sub = times[times["dataset"] == ds]
        for i, (col, label) in enumerate([("assembly_ms", "batching"), ("update_ms", "update"),
                                          ("combined_ms", "combined")]):
            ax = axes[i, j]
            for (model, v), g in sub.groupby(["model", "variant"]):
                g = g.sort_values("batch_size")
                st = style(v)
                ax.errorbar(g["batch_size"], g[(col, "mean")], yerr=g[(col, "std")].fillna(0), capsize=3,
                            label=f"{v}, {model}" if len(models) > 1 else v, color=st["color"], marker=st["marker"],
                            linestyle=LINESTYLES[models.index(model) % len(LINESTYLES)])
            _log2_x(ax, times["batch_size"].unique())
            ax.set_ylabel(f"mean {label} time [ms/step]")
            ax.set_title(f"{ds}: {label}", fontsize=10)
            ax.grid(alpha=0.3)
        ax = axes[3, j]
        bars = []
        for model in models:
            m = sub[sub["model"] == model].set_index(["variant", "batch_size"])[("combined_ms", "mean")]
            for a, b in (("static-pow2", "dynamic"), ("static-64", "static-pow2")):
                for bs in sorted(sub["batch_size"].unique()):
                    if (a, bs) in m.index and (b, bs) in m.index:
                        kind = f"{a} / {b}" + (f", {model}" if len(models) > 1 else "")
                        bars.append((kind, bs, m[(a, bs)] / m[(b, bs)]))
        kinds = list(dict.fromkeys(k for k, _, _ in bars))
        sizes = sorted(sub["batch_size"].unique())
        w = 0.8 / max(len(kinds), 1)
        for k, kind in enumerate(kinds):
            vals = [next((r for kk, bs, r in bars if kk == kind and bs == b), np.nan) for b in sizes]
            ax.bar(np.arange(len(sizes)) + k * w, vals, w, label=kind, color=plt.get_cmap("tab10")(7 + k % 3))
        ax.set_xticks(np.arange(len(sizes)) + w * (len(kinds) - 1) / 2, [str(b) for b in sizes])
        _ratio_axes(ax, "mean time per step ratio [x]", f"{ds}: per-step speedup (compilation included)")
    _legend(fig, axes)
    fig.suptitle("The study's timing figure: MEAN time per step over every step, compilation included; "
                 f"bars = std over seeds\n{_subtitle(df)}")
    return _save(fig, out_dir, "study_timing", fmt)


def windowed_means(steps: pd.DataFrame, windows: int = WINDOWS) -> pd.DataFrame:
    """Per variant: the mean combined ms of every step in each of ``windows`` equal windows of the
    run (compiling steps included, what a restart repeated excluded), per seed, then the mean
    over seeds. Columns ``variant``, ``step`` (the window's last step, 1-based), ``combined_ms``."""
    rows = []
    for (v, seed), g in steps.groupby(["variant", "seed"]):
        g = g.sort_values("step")
        ms = g["combined_ms"].to_numpy(float)
        if "restart_compile_s" in g:
            ms = ms - g["restart_compile_s"].to_numpy(float) * 1e3
        edges = np.linspace(0, len(ms), min(windows, len(ms)) + 1).astype(int)
        for lo, hi in itertools.pairwise(edges):
            rows.append({"variant": v, "seed": seed, "step": int(g["step"].iloc[hi - 1]) + 1,
                         "combined_ms": float(ms[lo:hi].mean())})
    out = pd.DataFrame(rows, columns=["variant", "seed", "step", "combined_ms"])
    return out.groupby(["variant", "step"], as_index=False)["combined_ms"].mean()


def plot_study_time_series(df, out_dir, fmt):
    """The study's time series: the combined time per step averaged over each twentieth of the run
    (its 100k-step windows of 2M steps), one panel per cell (dataset, model, batch size), one
    marker series per method, mean over seeds. Where a method compiles, its first windows rise."""
    steps = _per_run(df, STEPS)
    style = _Styles(df)
    cells = _by_cell(df, steps)
    cols = min(len(cells), 2)
    rows = -(-len(cells) // cols)
    fig, axes = _subplots(rows, cols, figsize=(5.6 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(cells):]:
        ax.set_axis_off()
    for ax, (title, sub) in zip(axes.ravel(), cells):
        for v, g in windowed_means(sub).groupby("variant"):
            st = style(v)
            ax.plot(g["step"], g["combined_ms"], st["marker"], color=st["color"], alpha=0.7, markersize=7,
                    label=STUDY_LABEL.get(v, v))
        ax.set_xlabel("training steps")
        ax.set_ylabel("combined time [ms/step]")
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"The study's time series: mean combined (batching + update) time per step over each 1/{WINDOWS} "
                 f"of the run, compilation included; mean over seeds\n{_subtitle(df)}")
    return _save(fig, out_dir, "study_time_series", fmt)


def student_t_matrix(values: dict[str, np.ndarray], order: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The study's matrices: ``t[i, j], p[i, j] = scipy.stats.ttest_ind(values[order[i]],
    values[order[j]])`` (Student's t, equal variances, uncorrected), NaN where a side has fewer
    than 2 values."""
    t = np.full((len(order), len(order)), np.nan)
    p = np.full_like(t, np.nan)
    for i, a in enumerate(order):
        for j, b in enumerate(order):
            xa, xb = np.asarray(values[a], float), np.asarray(values[b], float)
            if len(xa) >= 2 and len(xb) >= 2 and (xa.std() > 0 or xb.std() > 0):
                res = stats.ttest_ind(xa, xb)
                t[i, j], p[i, j] = float(res.statistic), float(res.pvalue)
    return t, p


def plot_study_significance(df, out_dir, fmt):
    """The study's significance heatmaps, per cell: Student's t statistic of final test RMSE for
    every (row, column) pair of methods on a diverging scale clipped to [-3, 3], and its p-value
    on [0, 1]; the study's methods first in its order (dynamic, static-pow2, static-64)."""
    extras = extra_axes(df)
    cells = [(t, sub) for t, sub in _by_cell(df, df)]
    fig, axes = _subplots(2, max(len(cells), 1), figsize=(4.6 * max(len(cells), 1), 8.2), squeeze=False)
    cmaps = (plt.get_cmap("RdBu_r"), plt.get_cmap("viridis_r"))
    drawn = False
    for j, (title, sub) in enumerate(cells):
        values = {}
        for _, r in sub.iterrows():
            values.setdefault(variant(r, extras), []).append(r["test_rmse"])
        order = [m for m in STUDY_ORDER if m in values] + sorted(m for m in values if m not in STUDY_ORDER)
        t, p = student_t_matrix(values, order)
        labels = [STUDY_LABEL.get(m, m) for m in order]
        for i, (mat, lo, hi, name) in enumerate(((t, -3, 3, "t statistic"), (p, 0, 1, "p-value"))):
            ax = axes[i, j]
            im = ax.imshow(mat, vmin=lo, vmax=hi, cmap=cmaps[i])
            ax.set_xticks(range(len(order)), labels, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(order)), labels, fontsize=8)
            for a in range(len(order)):
                for b in range(len(order)):
                    ok = np.isfinite(mat[a, b])
                    drawn |= bool(ok)
                    colour = _text_colour(cmaps[i]((mat[a, b] - lo) / (hi - lo))) if ok else "k"
                    ax.text(b, a, f"{mat[a, b]:.2f}" if ok else "n/a", ha="center", va="center", fontsize=8,
                            color=colour)
            ax.set_title(f"{title}\nStudent's t test, {name}", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.75)
    why = "" if drawn else " - n/a everywhere: at least 2 seeds per method are needed"
    fig.suptitle("The study's t-test heatmaps of final test RMSE (row method vs column method, Student's t, "
                 f"uncorrected; ours with Holm's correction: significance){why}\n{_subtitle(df)}")
    return _save(fig, out_dir, "study_significance", fmt)


FIGURES = [plot_study_timing, plot_study_time_series, plot_study_significance]
