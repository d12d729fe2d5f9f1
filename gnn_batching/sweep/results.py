"""Collect a sweep into one tidy table (one row per finished run) and compare methods.

``results.csv`` / ``results.parquet`` hold every grid axis (as ``axis:<key>`` columns) and
every summary metric; ``comparison.csv`` holds one row per group of runs that differ ONLY in
their seed. All are rebuilt from the run directories each time (atomically), so an interrupted
sweep can never leave duplicate or missing rows.

Grouping never pools settings: a group is (dataset, model, batch size, method) plus EVERY other
grid axis except ``train.seed``; methods are compared with each other inside a "cell" (the
group keys without the method).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd

from gnn_batching.errors import UserError
from gnn_batching.io import bounded_percent, text_table, write_csv_atomic
from gnn_batching.rundir import CONFIG
from gnn_batching.sweep.intervals import SLOW_PROCESS
from gnn_batching.sweep.layout import RUNS, SUMMARY, finished_runs, read_json, repeat_of, sweep_info

GROUP = ["dataset", "model", "batch_size"]
# grid axes that are already summary columns, and the axis that makes repeats
BASE_AXES = {"dataset.name": "dataset", "model.name": "model", "batching.batch_size": "batch_size",
             "batching.method": "method"}
SEED_AXES = ("train.seed",)
# learning figures: repeats of one seed learn the same thing, so they are averaged per seed first
LEARNING_METRICS = ("test_rmse", "test_mae", "val_rmse")
METRICS = ["combined_ms_median", "combined_ms_mean", "assembly_ms_median", "update_ms_median", "graphs_per_s",
           "graphs_per_s_incl_compile", "ms_per_step_incl_compile", "train_wall_s", "overhead_s",
           "train_step_compiles", "eval_step_compiles", "train_compile_seconds", "compile_seconds", "node_fill",
           "edge_fill", "graph_fill", "real_graphs_per_batch_mean", "test_rmse", "test_mae", "val_rmse",
           "test_graphs", "val_graphs", "peak_device_memory_bytes", "device_step_ms", "host_overhead_fraction",
           "wait_fraction", "slow_stretch_fraction"]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def collect(sweep_dir: str, write: bool = False) -> pd.DataFrame:
    """A sweep's tidy results table: one row per finished run.

    Args:
        sweep_dir: the sweep's ``output_dir``.
        write: also write ``results.csv``/``.parquet`` and ``comparison.csv`` (atomically); by
            default nothing is written (reading a sweep, e.g. in a notebook, has no side effect).

    Returns:
        Every grid axis as an ``axis:<key>`` column plus every summary metric. ``run_dir`` is
        resolved from ``sweep_dir`` (a sweep directory that was moved or copied still works);
        the written tables hold it relative (``runs/<cell>``).

    Raises:
        UserError: not a sweep directory, no finished run, or a run file missing (named).
    """
    import yaml

    info = sweep_info(sweep_dir)
    rows = []
    for run_dir in finished_runs(sweep_dir):
        s = read_json(os.path.join(run_dir, SUMMARY))
        cfg_path = os.path.join(run_dir, CONFIG)
        try:
            with open(cfg_path, encoding="utf-8") as fh:
                cfg = _flatten(yaml.safe_load(fh) or {})
        except OSError:
            raise UserError(f"{cfg_path}: missing; the run directory is incomplete") from None
        row = {"cell": os.path.basename(run_dir), "repeat": repeat_of(os.path.basename(run_dir))}
        for k in info.get("grid", {}):
            v = cfg.get(k)
            row[f"axis:{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
        row.update(s)
        row["run_dir"] = run_dir
        rows.append(row)
    if not rows:
        raise UserError(f"{sweep_dir}: no finished runs yet")
    df = pd.DataFrame(rows)
    if write:
        out = df.copy()
        out["run_dir"] = [os.path.join(RUNS, c) for c in out["cell"]]
        write_csv_atomic(os.path.join(sweep_dir, "results.csv"), out)
        tmp = os.path.join(sweep_dir, ".results.parquet.tmp")
        out.to_parquet(tmp, index=False)
        os.replace(tmp, os.path.join(sweep_dir, "results.parquet"))
        write_csv_atomic(os.path.join(sweep_dir, "comparison.csv"), comparison_table(df))
    return df


def extra_axes(df: pd.DataFrame) -> list[str]:
    """``axis:`` columns other than the base keys and the seed: settings that must never be pooled."""
    return [c for c in df.columns if c.startswith("axis:") and c[5:] not in BASE_AXES and c[5:] not in SEED_AXES]


def group_keys(df: pd.DataFrame) -> list[str]:
    """Runs in one group differ only in their seed."""
    return ["dataset", "model", "batch_size", "method", *extra_axes(df)]


def cell_keys(df: pd.DataFrame) -> list[str]:
    """Methods are compared within a cell: every group key except the method."""
    return [k for k in group_keys(df) if k != "method"]


def variant(row, extras: list[str]) -> str:
    """Line label in figures: the method, plus any extra axes' values."""
    if not extras:
        return str(row["method"])
    return f"{row['method']} ({', '.join(f'{c[5:]}={row[c]}' for c in extras)})"


def with_variant(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with a ``variant`` column naming each run's extra grid axes."""
    extras = extra_axes(df)
    out = df.copy()
    out["variant"] = [variant(r, extras) for _, r in out.iterrows()] if len(out) else []
    return out


def _overhead(df: pd.DataFrame) -> pd.Series:
    """Seconds a run spent beyond steady state: train_wall_s minus the time its graphs would have
    taken at its steady-state graphs/s (compiling and warm-up steps)."""
    return df["train_wall_s"] - df["graphs_seen"] / df["graphs_per_s"]


def comparison(df: pd.DataFrame, intervals: bool = True) -> pd.DataFrame:
    """One row per group (runs that differ only in seed or repeat): mean and std over its runs of
    each metric (test and validation errors: over seeds, repeats of a seed averaged first),
    ``n_runs`` and ``n_seeds``, the speedups, and the break-even against the fewest-compiles method;
    with ``intervals`` (and the runs' records), the 95 % interval of every speed figure
    (:mod:`gnn_batching.sweep.intervals`): ``*_low`` / ``*_high``, ``processes``, ``slow_processes`` and ``judge``.

    * ``speedup_steady``: this group's steady-state graphs/s over the slowest method's in the cell.
    * ``speedup_incl_compile``: the same with graphs/s including compilation (train_wall_s).
    * ``break_even_steps``: for a method that compiles more than the cell's fewest-compiling method
      (``break_even_ref``), the training steps (of this method) after which its steady-state
      advantage has paid for its extra overhead: ``(overhead - overhead_ref) / (s_per_graph_ref -
      s_per_graph)`` graphs, divided by its graphs per step; ``never`` if it is not faster in
      steady state; empty for the reference and methods that compile no more than it.
    """
    df = df.copy()
    if {"train_wall_s", "graphs_seen", "graphs_per_s"} <= set(df.columns):
        df["overhead_s"] = _overhead(df)
    keys = group_keys(df)
    metrics = [m for m in METRICS if m in df]
    g = df.groupby(keys, dropna=False, sort=True)
    agg = g[metrics].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg["n_runs"] = g.size()
    agg["n_seeds"] = g["seed"].nunique()
    agg["seeds"] = g["seed"].agg(lambda s: " ".join(str(int(x)) for x in sorted(s.unique())))
    own = method_columns(df)
    for c in own:  # a method's own columns (its class's summary_fields): one value per group
        agg[c] = g[c].agg(lambda v: ", ".join(sorted({_plain_value(x) for x in v.dropna()})) or None)
    per_seed = [m for m in LEARNING_METRICS if m in df]
    if per_seed and "seed" in df:  # repeats of a seed learn the same: one value per seed, not per process
        seeds = df.groupby([*keys, "seed"], dropna=False)[per_seed].mean().groupby(keys, dropna=False)
        for m in per_seed:
            agg[f"{m}_mean"], agg[f"{m}_std"] = seeds[m].mean(), seeds[m].std()
    agg = agg.reset_index()
    cells = cell_keys(df)
    cg = agg.groupby(cells, dropna=False)
    agg["speedup_steady"] = agg["graphs_per_s_mean"] / cg["graphs_per_s_mean"].transform("min")
    if "graphs_per_s_incl_compile_mean" in agg:
        agg["speedup_incl_compile"] = (agg["graphs_per_s_incl_compile_mean"]
                                       / cg["graphs_per_s_incl_compile_mean"].transform("min"))
    agg["break_even_steps"] = ""
    agg["break_even_ref"] = ""
    if "overhead_s_mean" in agg:
        for _, idx in cg.groups.items():
            _break_even(agg, list(idx))
    if intervals and "run_dir" in df:
        _add_intervals(agg, df, keys, cells)
    return agg


def _add_intervals(agg: pd.DataFrame, df: pd.DataFrame, keys: list[str], cells: list[str]) -> None:
    """The 95 % intervals of every speed figure (:mod:`gnn_batching.sweep.intervals`)."""
    from gnn_batching.sweep import intervals as iv

    found = iv.groups(df, keys)
    rep = [found[tuple(r[k] for k in keys)] for _, r in agg.iterrows()]
    agg["processes"] = [x.processes for x in rep]
    agg["steady_steps_min"] = [x.steady_steps_min for x in rep]
    agg["judge"] = [x.judge for x in rep]
    agg["slow_processes"] = [x.slow_processes for x in rep]
    for col, what in (("graphs_per_s", "steady"), ("graphs_per_s_incl_compile", "incl"),
                      ("train_wall_s", "train_wall_s")):
        bounds = [x.interval(what) for x in rep]
        agg[f"{col}_low"], agg[f"{col}_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    for col, what, mean in (("speedup_steady", "steady", "graphs_per_s_mean"),
                            ("speedup_incl_compile", "incl", "graphs_per_s_incl_compile_mean")):
        lows, highs = [np.nan] * len(agg), [np.nan] * len(agg)
        if mean in agg:
            for _, idx in agg.groupby(cells, dropna=False).groups.items():
                slowest = agg.loc[list(idx), mean].idxmin()
                for i in idx:
                    lows[i], highs[i] = (1.0, 1.0) if i == slowest else iv.ratio_interval(rep[i], rep[slowest], what)
        agg[f"{col}_low"], agg[f"{col}_high"] = lows, highs
    lows, highs = [np.nan] * len(agg), [np.nan] * len(agg)
    for i, r in agg.iterrows():
        if str(r.get("break_even_steps", "") or "") and r["break_even_ref"] not in ("", "(reference)"):
            ref = agg[agg["method"] == r["break_even_ref"]]
            for k in cells:
                ref = ref[(ref[k] == r[k]) | (pd.isna(ref[k]) & pd.isna(r[k]))]
            if len(ref):
                lows[i], highs[i] = iv.break_even(rep[i], rep[ref.index[0]], r["real_graphs_per_batch_mean_mean"])
    agg["break_even_low"], agg["break_even_high"] = lows, highs


def _break_even(agg: pd.DataFrame, idx: list) -> None:
    sub = agg.loc[idx].sort_values(["train_step_compiles_mean", "overhead_s_mean"])
    ref = sub.iloc[0]
    c_ref = 1.0 / ref["graphs_per_s_mean"]
    for i, r in sub.iloc[1:].iterrows():
        agg.at[i, "break_even_ref"] = ref["method"]
        if r["train_step_compiles_mean"] <= ref["train_step_compiles_mean"]:
            agg.at[i, "break_even_steps"] = ""
            continue
        c = 1.0 / r["graphs_per_s_mean"]
        if c >= c_ref:
            agg.at[i, "break_even_steps"] = "never"
            continue
        graphs = max(r["overhead_s_mean"] - ref["overhead_s_mean"], 0.0) / (c_ref - c)
        agg.at[i, "break_even_steps"] = str(math.ceil(graphs / r["real_graphs_per_batch_mean_mean"]))
    agg.at[sub.index[0], "break_even_ref"] = "(reference)"


def method_columns(df: pd.DataFrame) -> list[str]:
    """The columns the methods of ``df`` declared as their own (``summary_fields``), in order."""
    if "method_columns" not in df:
        return []
    out: list[str] = []
    for v in df["method_columns"].dropna():
        out += [c for c in str(v).split(",") if c and c in df and c not in out]
    return out


def _plain_value(x) -> str:
    """A method column's value as written (a column with gaps holds 128 as 128.0)."""
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _settings(r: pd.Series, own: list[str]) -> str:
    parts = [f"{c.removeprefix('option_')}={r[c]}" for c in own if r.get(c) not in (None, "") and not (
        isinstance(r.get(c), float) and not np.isfinite(r[c]))]
    return " ".join(parts) or "-"


def comparison_table(df: pd.DataFrame) -> pd.DataFrame:
    """``comparison.csv``: the comparison with extra axes named by their dotted keys."""
    agg = comparison(df)
    return agg.rename(columns={c: c[5:] for c in agg.columns if c.startswith("axis:")})


def _pm(mean: float, std: float, fmt: str) -> str:
    if mean is None or not np.isfinite(mean):
        return "-"
    if std is None or not np.isfinite(std):
        return fmt.format(mean)
    return f"{fmt.format(mean)}±{fmt.format(std)}"


def _x(v: float) -> str:
    return f"{v:.2f}x" if v is not None and np.isfinite(v) else "-"


def _xi(r: pd.Series, col: str, steady: bool = True) -> str:
    """A speedup with its 95 % interval (and, on the steady figure, whose window the mark judges, a
    too-short / too-noisy mark)."""
    text = _x(r[col])
    lo, hi = r.get(f"{col}_low", np.nan), r.get(f"{col}_high", np.nan)
    if text != "-" and lo is not None and np.isfinite(lo) and np.isfinite(hi) and not (lo == hi == 1.0):
        text += f" [{lo:.2f}, {hi:.2f}]"
    if steady and r.get("judge"):
        text += " (too short)" if str(r["judge"]).startswith("too short") else " (too noisy)"
    return text


def _break_even_text(r: pd.Series) -> str:
    be = r["break_even_steps"]
    if not be:
        return "-"
    lo, hi = r.get("break_even_low", np.nan), r.get("break_even_high", np.nan)
    span = ""
    if lo is not None and not (isinstance(lo, float) and np.isnan(lo)):
        span = " [" + ", ".join("never" if not np.isfinite(v) else f"{math.ceil(v):,}" for v in (lo, hi)) + "]"
    return f"{be}{span} (vs {r['break_even_ref']})"


def _processes_text(r: pd.Series) -> str:
    """The processes behind a row, with how many of them were slow (``3 (1 slow)``)."""
    text = str(int(r.get("processes", r["n_runs"])))
    slow = r.get("slow_processes", 0)
    return f"{text} ({int(slow)} slow)" if slow and np.isfinite(slow) else text


def format_comparison(df: pd.DataFrame, markdown: bool = False) -> str:
    """The comparison table (:func:`comparison`) as text, or Markdown if ``markdown``."""
    agg = comparison(df)
    extras = extra_axes(df)
    incl = "graphs_per_s_incl_compile_mean" in agg
    probe = "device_step_ms_mean" in agg and agg["device_step_ms_mean"].notna().any()
    own = method_columns(df)
    head = ["dataset", "model", "bs", "method", *(["method settings"] if own else []), *(c[5:] for c in extras),
            "ms/step",
            *(["device ms", "host share"] if probe else []), "graphs/s",
            "speedup", "graphs/s incl. compile", "speedup incl. compile", "compiles", "compile s",
            "break-even steps", "node fill", "edge fill", "graphs/batch", "test RMSE", "test MAE", "seeds",
            "processes"]
    rows = []
    for _, r in agg.sort_values(cell_keys(df) + ["graphs_per_s_mean"], ascending=True).iterrows():
        rows.append([
            str(r["dataset"]), str(r["model"]), str(r["batch_size"]), str(r["method"]),
            *([_settings(r, own)] if own else []), *(str(r[c]) for c in extras),
            _pm(r["combined_ms_median_mean"], r["combined_ms_median_std"], "{:.2f}"),
            *([_pm(r["device_step_ms_mean"], None, "{:.2f}"), bounded_percent(r["host_overhead_fraction_mean"])]
              if probe else []),
            _pm(r["graphs_per_s_mean"], r["graphs_per_s_std"], "{:.0f}"),
            _xi(r, "speedup_steady"),
            _pm(r["graphs_per_s_incl_compile_mean"], r["graphs_per_s_incl_compile_std"], "{:.0f}") if incl else "-",
            _xi(r, "speedup_incl_compile", steady=False) if incl else "-",
            _pm(r["train_step_compiles_mean"], r["train_step_compiles_std"], "{:.1f}"),
            _pm(r["train_compile_seconds_mean"], r["train_compile_seconds_std"], "{:.1f}")
            if "train_compile_seconds_mean" in r else "-",
            _break_even_text(r),
            f"{r['node_fill_mean']:.3f}", f"{r['edge_fill_mean']:.3f}",
            f"{r['real_graphs_per_batch_mean_mean']:.1f}",
            _pm(r["test_rmse_mean"], r["test_rmse_std"], "{:.3f}"),
            _pm(r["test_mae_mean"], r["test_mae_std"], "{:.3f}"),
            str(int(r["n_seeds"])), _processes_text(r),
        ])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    return text_table(head, rows) + "\n" + COMPARISON_NOTE + ("\nSome rows use SYNTHETIC data." if df["synthetic"].any()
                                                        else "")


COMPARISON_NOTE = (
    "ms/step: median combined (assembly + update) time of steady-state steps (warm-up and compiling steps "
    "excluded); ± = std over the row's processes (its seeds and repeats).\n"
    "device ms: the train step ALONE (arrays on the device, compiled) on the run's last steady batches, timed after "
    "training; host share: 1 - device ms / whole step over those same steps (our host pipeline, copy, dispatch); "
    "'~0% (measured -2%)*': the step re-timed alone ran slower than the whole step had in training, which a share "
    "cannot: timing noise, read as ~0% (the measured figure is host_overhead_fraction in results.csv).\n"
    "graphs/s: steady-state throughput; graphs/s incl. compile: every graph trained / train_wall_s (all steps, "
    "compiling ones included, evaluation excluded).\n"
    "speedup: graphs/s over the slowest method's on the same measure, same dataset, model, batch size and other "
    "grid axes; [low, high]: its 95 % interval over the fresh processes (runs) behind the two rows (Welch's t on "
    "log graphs/s; one process: a bootstrap over blocks of steady steps, step-to-step noise only; docs/guide.md); "
    "(too short) / (too noisy), on the steady speedup: a process with under 50 steady steps, or an interval wider "
    "than the figure itself: do not read that ratio. processes: fresh processes behind a row; (N slow): N of them "
    "ran their steady steps "
    f"more than {SLOW_PROCESS:.2f}x slower than the row's fastest process (a slow stretch of the machine; kept in "
    "every figure and interval).\n"
    "compiles / compile s: train-step compilations and their seconds. break-even steps: after how many steps a "
    "method that compiles more than the reference (fewest compiles) has paid back its extra overhead through "
    "faster steady-state steps ('never': it is not faster)."
)
