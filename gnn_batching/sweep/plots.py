"""Paper-style figures for a sweep, generalised to whatever it contains.

1. ``timing``        assembly / update / combined ms per step vs batch size (error bars = std over
                     processes, in ms, the axis unit)
2. ``speedup``       graphs/s relative to the slowest method, steady state AND including compilation,
                     with each ratio's 95 % interval
3. ``compiles``      train-step compilations and compile seconds vs batch size
4. ``cumulative``    cumulative training wall time (compiles included) vs step and vs graphs seen:
                     where a method that compiles more catches up, if it does
5. ``time_to_accuracy`` test RMSE vs training wall time incl. compilation, and vs graphs seen
6. ``learning``      test RMSE / MAE vs training steps and vs graphs seen (mean over seeds)
7. ``batch_sizes``   histograms of real nodes, edges and graphs per batch, by method
8. ``fill``          node / edge / graph fill by method and batch size
9. ``significance``  Holm-adjusted p-values of pairwise tests on final test RMSE (heatmaps)

and the study's own figures, drawn as it drew them (:mod:`gnn_batching.study.figures`).

Lines are keyed by *variant*: the method plus any other grid axis (seeds are never pooled with
anything else). Each method keeps one colour and marker in every figure; extra axes change the
line style.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gnn_batching.errors import UserError
from gnn_batching.rundir import EVALS, STEPS, run_file
from gnn_batching.sweep.results import cell_keys, comparison, extra_axes, group_keys, variant, with_variant
from gnn_batching.sweep.significance import pairwise_tests

LINESTYLES = ["-", "--", ":", "-."]


def method_style(method: str) -> tuple:
    """``(colour, marker)`` of a method, the same in every figure whatever the sweep holds: the
    method class's ``style``, else one derived from its name (a method whose module is not loaded)."""
    from gnn_batching.plugins import registered_method

    cls = registered_method(method)
    if cls is not None and cls.style is not None:
        return tuple(cls.style)
    cmap = plt.get_cmap("tab20")
    return cmap(sum(map(ord, method)) % 20), "h"


class _Styles:
    """(colour, marker, linestyle) per variant: colour and marker from the method, line style from
    the extra axes' values."""

    def __init__(self, df: pd.DataFrame):
        extras = extra_axes(df)
        combos = sorted({tuple(str(r[c]) for c in extras) for _, r in df.iterrows()}) if extras else [()]
        self._ls = {c: LINESTYLES[i % len(LINESTYLES)] for i, c in enumerate(combos)}
        self._map = {}
        for _, r in df.iterrows():
            color, marker = method_style(str(r["method"]))
            self._map[variant(r, extras)] = (color, marker, self._ls[tuple(str(r[c]) for c in extras)])

    def __call__(self, v: str) -> dict:
        color, marker, ls = self._map.get(v, ("k", "o", "-"))
        return {"color": color, "marker": marker, "linestyle": ls}


def _subplots(*args, **kwargs):
    """plt.subplots with constrained layout, so panel titles and the suptitle never collide."""
    return plt.subplots(*args, layout="constrained", **kwargs)


def _legend(fig, axes) -> None:
    """One legend for the figure, OUTSIDE the panels (below them): it can never cover data."""
    handles, labels = {}, []
    for ax in np.atleast_1d(axes).ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
                   ncols=min(len(labels), 4), fontsize=8, frameon=False)


def _log2_x(ax, sizes) -> None:
    """A log2 batch-size axis that stays readable with ONE batch size (a lone point would get a
    degenerate range): a margin of a factor 1.6 either side, ticks at the sizes."""
    sizes = sorted(int(b) for b in sizes)
    ax.set_xscale("log", base=2)
    ax.set_xlim(sizes[0] / 1.6, sizes[-1] * 1.6)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()


def _identical_to(curves: dict[str, tuple]) -> dict[str, str]:
    """``variant -> variant it coincides with`` for curves (x, y arrays) identical to an earlier one
    (e.g. two static methods with one seed see the same batches: their losses are equal)."""
    out: dict[str, str] = {}
    names = list(curves)
    for i, v in enumerate(names):
        for u in names[:i]:
            a, b = curves[v], curves[u]
            if u not in out and all(len(x) == len(y) and np.allclose(x, y, equal_nan=True) for x, y in zip(a, b)):
                out[v] = u
                break
    return out


def _plot_curves(ax, curves: dict[str, tuple], style, marker: bool = True) -> None:
    """Plot ``variant -> (x, y)``; a curve identical to another is labelled so and drawn dashed
    with open markers on top, so neither hides the other."""
    same = _identical_to(curves)
    for v, (x, y) in curves.items():
        st = style(v)
        kw = {"color": st["color"], "linestyle": st["linestyle"], "label": v}
        if marker:
            kw.update(marker=st["marker"], markersize=4)
        if v in same:
            kw.update(label=f"{v} (identical to {same[v]})", linestyle=(0, (4, 3)), markerfacecolor="none",
                      linewidth=2.0, zorder=3)
        ax.plot(x, y, **kw)


def _ratio_axes(ax, ylabel: str, title: str) -> None:
    """A bar panel of ratios: the 1.0 line, batch sizes along x, horizontal grid."""
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("batch size (graphs incl. padding graph)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


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


def _agg(df):
    return with_variant(comparison(df))


def plot_timing(df, out_dir, fmt):
    """Figure ``timing``: assembly, update and combined ms per step against batch size, per method."""
    agg = _agg(df)
    style = _Styles(df)
    panels = _panels(df)
    fig, axes = _subplots(3, len(panels), figsize=(5 * len(panels), 10), squeeze=False, sharex=True)
    for j, (ds, model) in enumerate(panels):
        sub = agg[(agg["dataset"] == ds) & (agg["model"] == model)]
        for i, (col, label) in enumerate([("assembly_ms_median", "batching (assembly)"),
                                          ("update_ms_median", "update (jitted step)"),
                                          ("combined_ms_median", "combined")]):
            ax = axes[i, j]
            for v, g in sub.groupby("variant"):
                g = g.sort_values("batch_size")
                ax.errorbar(g["batch_size"], g[f"{col}_mean"], yerr=g[f"{col}_std"].fillna(0), label=v,
                            capsize=3, **style(v))
            _log2_x(ax, agg["batch_size"].unique())
            ax.set_ylabel(f"{label} [ms/step]")
            ax.set_title(f"{ds} / {model}: {label}", fontsize=10)
            ax.grid(alpha=0.3)
        axes[-1, j].set_xlabel("batch size (graphs incl. padding graph)")
    _legend(fig, axes)
    fig.suptitle("Time per training step (median over steady-state steps; bars = std over processes: seeds and "
                 f"repeats)\n{_subtitle(df)}")
    return _save(fig, out_dir, "timing", fmt)


def _bars(ax, sub, col, style, sizes):
    """One bar per variant and batch size; where the column has a 95 % interval (``col_low`` /
    ``col_high``) and a bar is one row, its interval as an error bar."""
    variants = sorted(sub["variant"].unique())
    w = 0.8 / max(len(variants), 1)
    for k, v in enumerate(variants):
        rows = [sub[(sub["batch_size"] == b) & (sub["variant"] == v)] for b in sizes]
        vals = np.array([r[col].mean() for r in rows], float)
        st = style(v)
        yerr = None
        if f"{col}_low" in sub and f"{col}_high" in sub:
            lo = np.array([r[f"{col}_low"].iloc[0] if len(r) == 1 else np.nan for r in rows], float)
            hi = np.array([r[f"{col}_high"].iloc[0] if len(r) == 1 else np.nan for r in rows], float)
            ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(vals)
            yerr = np.where(ok, np.stack([vals - lo, hi - vals]), 0.0).clip(min=0.0)
        ax.bar(np.arange(len(sizes)) + k * w, vals, w, label=v, color=st["color"],
               hatch=None if st["linestyle"] == "-" else "//", yerr=yerr, capsize=3 if yerr is not None else 0,
               error_kw={"elinewidth": 1})
    ax.set_xticks(np.arange(len(sizes)) + w * (len(variants) - 1) / 2, [str(b) for b in sizes])


def plot_speedup(df, out_dir, fmt):
    """Figure ``speedup``: graphs/s over the slowest method, steady and including compiles."""
    agg = _agg(df)
    style = _Styles(df)
    panels = _panels(df)
    measures = [("speedup_steady", "steady state")]
    if "speedup_incl_compile" in agg:
        measures.append(("speedup_incl_compile", "including compilation"))
    fig, axes = _subplots(len(measures), len(panels), figsize=(6 * len(panels), 4.2 * len(measures)), squeeze=False)
    for i, (col, label) in enumerate(measures):
        for j, (ds, model) in enumerate(panels):
            ax = axes[i, j]
            sub = agg[(agg["dataset"] == ds) & (agg["model"] == model)]
            _bars(ax, sub, col, style, sorted(sub["batch_size"].unique()))
            _ratio_axes(ax, "graphs/s relative to the slowest [x]", f"{ds} / {model}: {label}")
    _legend(fig, axes)
    fig.suptitle("Throughput (graphs/s) over the slowest method, steady state and including compile time "
                 f"(bars: 95 % interval over processes)\n{_subtitle(df)}")
    return _save(fig, out_dir, "speedup", fmt)


def plot_compiles(df, out_dir, fmt):
    """Figure ``compiles``: compiled variants and compile seconds per method."""
    agg = _agg(df)
    style = _Styles(df)
    fig, axes = _subplots(1, 2, figsize=(11, 4.2))
    for v, g in agg.groupby("variant"):
        g = g.groupby("batch_size").mean(numeric_only=True).reset_index()
        axes[0].errorbar(g["batch_size"], g["train_step_compiles_mean"], yerr=g["train_step_compiles_std"].fillna(0),
                         label=v, capsize=3, **style(v))
        axes[1].errorbar(g["batch_size"], g["train_compile_seconds_mean"],
                         yerr=g["train_compile_seconds_std"].fillna(0), label=v, capsize=3, **style(v))
    # train steps only, as the comparison table's "compiles" and "compile s" columns
    for ax, lab in zip(axes, ["train-step compilations [count]", "train-step compile time [s]"]):
        _log2_x(ax, agg["batch_size"].unique())
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"XLA compilations of the train step per run (each distinct padded shape compiles once; as the "
                 f"table's 'compiles' and 'compile s')\n{_subtitle(df)}")
    return _save(fig, out_dir, "compiles", fmt)


def _per_run(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """``name`` (a CSV of every run) with the run's grouping columns attached."""
    frames = []
    extras = extra_axes(df)
    for _, r in df.iterrows():
        e = pd.read_csv(run_file(r["run_dir"], name))
        for k in ("dataset", "model", "method", "batch_size", "seed", *extras):
            e[k] = r[k]
        e["variant"] = variant(r, extras)
        frames.append(e)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _by_cell(df: pd.DataFrame, frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows of ``frame`` in that cell) for every cell of the sweep (dataset, model, batch
    size and extra axes; NaN axis values match NaN)."""
    keys = cell_keys(df)
    out = []
    for key in sorted(df.groupby(keys, dropna=False).groups):
        mask = np.ones(len(frame), bool)
        for k, v in zip(keys, key):
            mask &= (frame[k] == v).to_numpy() | (pd.isna(v) & frame[k].isna()).to_numpy()
        title = " / ".join(f"{k.removeprefix('axis:')}={v}" if k.startswith("axis:") else
                           (f"bs {v}" if k == "batch_size" else str(v)) for k, v in zip(keys, key))
        out.append((title, frame[mask]))
    return out


def plot_cumulative(df, out_dir, fmt):
    """Cumulative training wall time (assembly + update of every step, compiles included) per
    (dataset, model, batch size and extra axes), mean over seeds: vs step and vs graphs seen."""
    steps = _per_run(df, STEPS)
    style = _Styles(df)
    cells = _by_cell(df, steps)
    fig, axes = _subplots(len(cells), 2, figsize=(11, 3.6 * len(cells)), squeeze=False)
    for i, (title, sub) in enumerate(cells):
        by_step, by_graphs = {}, {}
        for v, g in sub.groupby("variant"):
            g = g.sort_values(["seed", "step"]).copy()
            # the time-to-train rule: what a restart repeated is not training time
            repeated = g["restart_compile_s"] * 1e3 if "restart_compile_s" in g else 0.0
            g["cum_s"] = (g["combined_ms"] - repeated).groupby(g["seed"]).cumsum() / 1e3
            mean = g.groupby("step")[["cum_s", "graphs_seen"]].mean().reset_index()
            by_step[v] = (mean["step"].to_numpy() + 1, mean["cum_s"].to_numpy())
            by_graphs[v] = (mean["graphs_seen"].to_numpy(), mean["cum_s"].to_numpy())
        _plot_curves(axes[i, 0], by_step, style, marker=False)
        _plot_curves(axes[i, 1], by_graphs, style, marker=False)
        for j, xl in enumerate(["training steps", "graphs seen"]):
            axes[i, j].set_xlabel(xl)
            axes[i, j].set_ylabel("cumulative training time [s]")
            axes[i, j].set_title(title, fontsize=9)
            axes[i, j].grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle("Time to train, compilation included (assembly + update of every step, evaluation excluded; "
                 f"mean over seeds)\n{_subtitle(df)}")
    return _save(fig, out_dir, "cumulative", fmt)


def plot_learning(df, out_dir, fmt):
    """Figure ``learning``: test error against steps and graphs seen, per method and batch size."""
    ev = _per_run(df, EVALS)
    ev = ev[ev["split"] == "test"] if len(ev) else ev
    panels = _panels(df)
    style = _Styles(df)
    sizes = sorted(df["batch_size"].unique())
    fig, axes = _subplots(2 * len(panels), 2, figsize=(11, 7 * len(panels)), squeeze=False)
    for p, (ds, model) in enumerate(panels):
        sub = ev[(ev["dataset"] == ds) & (ev["model"] == model)] if len(ev) else ev
        for i, metric in enumerate(["rmse", "mae"]):
            for j, x in enumerate(["step", "graphs_seen"]):
                ax = axes[2 * p + i, j]
                curves, styles = {}, {}
                for (v, b), g in sub.groupby(["variant", "batch_size"]) if len(sub) else []:
                    c = g.groupby("step")[[metric, "graphs_seen"]].mean().reset_index()
                    curves[f"{v}, bs {b}"] = (c[x].to_numpy(), c[metric].to_numpy())
                    styles[f"{v}, bs {b}"] = {**style(v), "linestyle": LINESTYLES[sizes.index(b) % 4]}
                _plot_curves(ax, curves, lambda name, styles=styles: styles[name])
                ax.set_xlabel("training steps" if x == "step" else "graphs seen")
                unit = df["unit"].iloc[0]
                ax.set_ylabel(f"test {metric.upper()}{f' [{unit}]' if unit else ''}")
                ax.ticklabel_format(axis="y", useOffset=False)
                ax.set_title(f"{ds} / {model}", fontsize=10)
                ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"Test error during training (mean over seeds; line style = batch size)\n{_subtitle(df)}")
    return _save(fig, out_dir, "learning", fmt)


def plot_time_to_accuracy(df, out_dir, fmt):
    """Test RMSE against training wall time INCLUDING compilation (``train_wall_s`` recorded with
    every evaluation), next to graphs seen: what a user waiting for a model sees."""
    ev = _per_run(df, EVALS)
    if "train_wall_s" not in ev:
        raise UserError("evals.csv has no train_wall_s (runs from an older version): re-run the sweep's cells")
    ev = ev[ev["split"] == "test"]
    style = _Styles(df)
    cells = _by_cell(df, ev)
    fig, axes = _subplots(len(cells), 2, figsize=(11, 3.6 * len(cells)), squeeze=False)
    for i, (title, sub) in enumerate(cells):
        by_time, by_graphs = {}, {}
        for v, g in sub.groupby("variant"):
            c = g.groupby("step")[["rmse", "train_wall_s", "graphs_seen"]].mean().reset_index()
            by_time[v] = (c["train_wall_s"].to_numpy(), c["rmse"].to_numpy())
            by_graphs[v] = (c["graphs_seen"].to_numpy(), c["rmse"].to_numpy())
        _plot_curves(axes[i, 0], by_time, style)
        _plot_curves(axes[i, 1], by_graphs, style)
        for j, xl in enumerate(["training time incl. compilation [s]", "graphs seen"]):
            axes[i, j].set_xlabel(xl)
            unit = df["unit"].iloc[0]
            axes[i, j].set_ylabel(f"test RMSE{f' [{unit}]' if unit else ''}")
            axes[i, j].set_title(title, fontsize=9)
            axes[i, j].grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"Time to accuracy (mean over seeds; evaluation time excluded)\n{_subtitle(df)}")
    return _save(fig, out_dir, "time_to_accuracy", fmt)


def plot_batch_sizes(df, out_dir, fmt):
    """Figure ``batch_sizes``: histograms of real nodes, edges and graphs per training batch."""
    sizes = sorted(df["batch_size"].unique())
    style = _Styles(df)
    dfv = with_variant(df)
    fig, axes = _subplots(len(sizes), 3, figsize=(14, 3.2 * len(sizes)), squeeze=False)
    for i, b in enumerate(sizes):
        runs = dfv[(dfv["batch_size"] == b)].sort_values("seed").drop_duplicates(["variant"])
        for _, r in runs.iterrows():
            steps = pd.read_csv(run_file(r["run_dir"], STEPS))
            for j, (col, lab) in enumerate([("real_nodes", "real nodes"), ("real_edges", "real edges"),
                                            ("real_graphs", "real graphs")]):
                axes[i, j].hist(steps[col], bins=30, histtype="step", linewidth=1.6, color=style(r["variant"])["color"],
                                linestyle=style(r["variant"])["linestyle"], label=r["variant"])
                axes[i, j].set_xlabel(f"{lab} per batch")
                axes[i, j].set_ylabel("batches")
                axes[i, j].set_title(f"batch size {b}", fontsize=10)
    _legend(fig, axes)
    fig.suptitle(f"Real content of training batches (one seed per method; static methods with the same seed "
                 f"hold the same graphs, so their outlines coincide)\n{_subtitle(df)}")
    return _save(fig, out_dir, "batch_sizes", fmt)


def plot_fill(df, out_dir, fmt):
    """Figure ``fill``: node, edge and graph fill against batch size, per method."""
    agg = _agg(df)
    style = _Styles(df)
    sizes = sorted(agg["batch_size"].unique())
    fig, axes = _subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, what in zip(axes, ["node", "edge", "graph"]):
        _bars(ax, agg, f"{what}_fill_mean", style, sizes)
        ax.set_xlabel("batch size")
        ax.set_title(f"{what} fill = real / padded")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("fill [fraction]")
    _legend(fig, axes)
    fig.suptitle(f"Padding efficiency (1.0 = no padding)\n{_subtitle(df)}")
    return _save(fig, out_dir, "fill", fmt)


def _text_colour(rgba) -> str:
    """Black or white, whichever reads better on ``rgba`` (relative luminance)."""
    r, g, b = rgba[:3]
    return "k" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "w"


def plot_significance(df, out_dir, fmt, tests: pd.DataFrame | None = None):
    """Figure ``significance``: pairwise test-error differences with Holm-corrected p-values.

    Labels are black or white by the cell's colour; when nothing is testable (one seed per
    method, or no spread) the figure says so in one panel instead of empty heatmaps.
    """
    tests = pairwise_tests(df) if tests is None else tests
    testable = len(tests) and np.isfinite(tests[["welch_p_holm", "mannwhitney_p_holm"]].to_numpy(float)).any()
    if not testable:
        fig, ax = _subplots(1, 1, figsize=(7, 2.6))
        seeds = int(df.groupby(group_keys(df), dropna=False)["seed"].nunique().min()) if len(df) else 0
        why = (f"{seeds} seed per method: a test needs at least 2 per method" if seeds < 2 else
               "no spread across seeds to test" if len(tests) else "one method per cell: nothing to compare")
        ax.text(0.5, 0.5, f"No pairwise test is possible here:\n{why}.\nAdd seeds (grid train.seed) to compare "
                "test error between methods.", ha="center", va="center", fontsize=11, transform=ax.transAxes)
        ax.set_axis_off()
        fig.suptitle("Does the batching method change final test RMSE?")
        return _save(fig, out_dir, "significance", fmt)
    keys = [k.removeprefix("axis:") for k in cell_keys(df)]
    groups = sorted(tests.groupby(keys, dropna=False).groups)
    n = max(len(groups), 1)
    cmap = plt.get_cmap("viridis_r")
    fig, axes = _subplots(2, n, figsize=(4.2 * n, 7.5), squeeze=False)
    for j, key in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        mask = np.ones(len(tests), bool)
        for k, v in zip(keys, key):
            mask &= (tests[k] == v).to_numpy() | (pd.isna(v) & tests[k].isna()).to_numpy()
        g = tests[mask]
        methods = sorted(set(g["method_a"]) | set(g["method_b"]))
        for i, col in enumerate(["welch_p_holm", "mannwhitney_p_holm"]):
            mat = np.full((len(methods), len(methods)), np.nan)
            for _, r in g.iterrows():
                a, b = methods.index(r["method_a"]), methods.index(r["method_b"])
                mat[a, b] = mat[b, a] = r[col]
            ax = axes[i, j]
            im = ax.imshow(mat, vmin=0, vmax=1, cmap=cmap)
            ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(methods)), methods, fontsize=8)
            for a in range(len(methods)):
                for b in range(len(methods)):
                    if a != b:
                        ok = np.isfinite(mat[a, b])
                        ax.text(b, a, f"{mat[a, b]:.2g}" if ok else "n/a", ha="center", va="center", fontsize=7,
                                color=_text_colour(cmap(mat[a, b])) if ok else "k")
            test = "Welch t" if i == 0 else "Mann-Whitney U"
            label = " ".join(str(x) for x in key)
            ax.set_title(f"{label}\n{test}, Holm-adjusted p", fontsize=9)
        fig.colorbar(im, ax=axes[:, j].tolist(), shrink=0.6, label="adjusted p")
    fig.suptitle("Does the batching method change final test RMSE? (pairwise, across seeds; n/a = not testable)")
    return _save(fig, out_dir, "significance", fmt)


FIGURES = [plot_timing, plot_speedup, plot_compiles, plot_cumulative, plot_time_to_accuracy, plot_learning,
           plot_batch_sizes, plot_fill, plot_significance]
