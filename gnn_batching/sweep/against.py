"""The same cells of two sweeps side by side (two commits, two jax versions, two machines): for
each group of runs in both (dataset, model, batch size, method and every other grid axis but the
seed), NEW's graphs/s over OLD's, steady and including compilation, with the 95 % interval of the
ratio (:mod:`gnn_batching.sweep.intervals`: Welch's t over the two sweeps' processes) and a
verdict: ``faster`` / ``slower`` when the interval excludes 1, ``same`` when it holds it,
``too short to judge`` when a run's steady window is too short or noisy, ``no interval`` with
one process on a side (graphs/s including compilation is one figure per process).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gnn_batching.errors import UserError
from gnn_batching.sweep import intervals as iv
from gnn_batching.sweep.results import collect, group_keys

MEASURES = (("steady", "graphs_per_s", "steady"), ("incl. compile", "graphs_per_s_incl_compile", "incl"))


def _point(g: pd.DataFrame, col: str) -> float:
    return float(g[col].mean()) if col in g else float("nan")


def against(new_dir: str, old_dir: str) -> pd.DataFrame:
    """One row per group in both sweeps and measure: ``ratio`` (NEW / OLD), ``low``, ``high``,
    ``verdict``, the two figures and the processes behind them.

    Raises:
      UserError: a folder is not a sweep, or the two sweeps share no cell.
    """
    new, old = collect(new_dir, write=False), collect(old_dir, write=False)
    keys = [k for k in group_keys(new) if k in group_keys(old)]
    extra_new = set(group_keys(new)) - set(keys)
    extra_old = set(group_keys(old)) - set(keys)
    if extra_new or extra_old:
        raise UserError(f"{new_dir} and {old_dir} have different grid axes "
                        f"({sorted(extra_new | extra_old)}): their cells cannot be matched")
    reps_new, reps_old = iv.groups(new, keys), iv.groups(old, keys)
    rows = []
    for key, g_new in new.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        if key not in reps_old:
            continue
        g_old = old[np.logical_and.reduce([(old[k] == v) | (pd.isna(old[k]) & pd.isna(v)) for k, v in zip(keys, key)])]
        rn, ro = reps_new[key], reps_old[key]
        for measure, col, attr in MEASURES:
            a, b = _point(g_new, col), _point(g_old, col)
            ratio = a / b if b else float("nan")
            lo, hi = iv.ratio_interval(rn, ro, attr)
            judge = (rn.judge or ro.judge) if attr == "steady" else ""
            # too short to judge / too noisy to judge, else faster / slower / same / no interval
            word = judge.split(" (")[0] if judge else iv.verdict_word(ratio, lo, hi)
            rows.append({**{k.removeprefix("axis:"): v for k, v in zip(keys, key)}, "measure": measure,
                         "new": a, "old": b, "ratio": ratio, "low": lo, "high": hi, "verdict": word,
                         "processes_new": rn.processes, "processes_old": ro.processes, "judge": judge})
    if not rows:
        raise UserError(f"{new_dir} and {old_dir} share no cell (dataset, model, batch size, method and grid axes)")
    return pd.DataFrame(rows)


def slower_beyond(rows: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The rows certainly slower by more than ``threshold`` (a fraction): verdict ``slower`` and
    the interval's upper end below ``1 - threshold``."""
    return rows[(rows["verdict"] == "slower") & (rows["high"] < 1.0 - threshold)]


def format_against(rows: pd.DataFrame) -> str:
    """The comparison as a text table, a line per group and measure."""
    from gnn_batching.io import text_table

    keys = [c for c in rows.columns if c not in {"measure", "new", "old", "ratio", "low", "high", "verdict",
                                                  "processes_new", "processes_old", "judge"}]
    head = [*keys, "measure", "new graphs/s", "old graphs/s", "new / old", "95 % interval", "processes", "verdict"]
    body = []
    for _, r in rows.iterrows():
        span = f"[{r['low']:.2f}, {r['high']:.2f}]" if np.isfinite(r["low"]) else "-"
        body.append([*(str(r[k]) for k in keys), r["measure"], f"{r['new']:.0f}", f"{r['old']:.0f}",
                     f"{r['ratio']:.2f}x", span, f"{r['processes_new']} / {r['processes_old']}",
                     r["verdict"] + (f" ({r['judge']})" if r["judge"] else "")])
    return text_table(head, body) + ("\nnew / old: NEW's graphs/s over OLD's; the interval is Welch's t over the two "
                                     "sweeps' processes (log graphs/s); same: the interval holds 1.")
