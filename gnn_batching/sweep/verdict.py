"""The verdict of a sweep in sentences, generated from its numbers: per cell (dataset, model, batch
size and any other grid axis), which method is fastest in steady state and including compilation,
after how many steps the order changes (break-even), and whether test error differs significantly.

Every figure it states is a column of the comparison table (``comparison``) or of the pairwise
tests (``significance.csv``), so a reader can check each sentence against the table under it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gnn_batching.sweep import intervals as iv
from gnn_batching.sweep.results import cell_keys, comparison, group_keys
from gnn_batching.sweep.significance import pairwise_tests

ALPHA = 0.05


def _cell_title(keys: list[str], key: tuple) -> str:
    parts = []
    for k, v in zip(keys, key):
        if k == "batch_size":
            parts.append(f"bs {v}")
        elif k.startswith("axis:"):
            parts.append(f"{k.removeprefix('axis:')}={v}")
        else:
            parts.append(str(v))
    return " / ".join(parts)


def _winner(sub: pd.DataFrame, col: str) -> tuple[pd.Series, pd.Series | None]:
    ranked = sub.sort_values(col, ascending=False)
    return ranked.iloc[0], (ranked.iloc[1] if len(ranked) > 1 else None)


def _significance(tests: pd.DataFrame, title_key: dict) -> str:
    """One clause on test RMSE for a cell, from the Holm-corrected Welch tests."""
    if not len(tests):
        return "test RMSE: not testable (one method)"
    rows = tests
    for k, v in title_key.items():
        if k in rows:
            rows = rows[(rows[k] == v) | (pd.isna(v) & rows[k].isna())]
    if not len(rows):
        return "test RMSE: not testable"
    if rows["welch_p_holm"].isna().all():
        few = (rows[["n_a", "n_b"]].min(axis=1) < 2).all()
        return ("test RMSE: not testable with one seed per method (add seeds to compare learning)" if few
                else "test RMSE: identical across seeds (nothing to test)")
    best = rows.sort_values("welch_p_holm").iloc[0]
    if best["welch_p_holm"] < ALPHA:
        lower, higher = (best["method_a"], best["method_b"]) if best["mean_a"] < best["mean_b"] \
            else (best["method_b"], best["method_a"])
        return (f"test RMSE differs: {lower} lower than {higher} "
                f"(Holm-corrected Welch p = {best['welch_p_holm']:.3g})")
    return f"test RMSE: no significant difference (smallest Holm-corrected Welch p = {best['welch_p_holm']:.2g})"


def _pair(found: dict, keys: list[str], a: pd.Series, b: pd.Series, what: str, col: str) -> str:
    """``a`` against ``b`` on one measure, in the words its interval allows."""
    ga, gb = found.get(tuple(a[k] for k in keys)), found.get(tuple(b[k] for k in keys))
    point = a[col] / b[col]
    if ga is None or gb is None:
        return f"{a['method']} {point:.2f}x {b['method']}"
    lo, hi = iv.ratio_interval(ga, gb, what)
    judge = (ga.judge or gb.judge) if what == "steady" else ""
    return iv.verdict_words(a["method"], b["method"], point, lo, hi, ga.processes, gb.processes, judge)


def _steady_lead(found: dict, keys: list[str], best: pd.Series, sub: pd.DataFrame, ref) -> str:
    """``""`` when ``best``'s steady lead over the method ``ref`` is real (its 95 % interval above
    1); else why not (``within noise``, or the steady window's judge): a break-even computed from a
    lead that may be noise recommends nothing."""
    rows = sub[sub["method"] == ref]
    if not len(rows):
        return ""
    ga, gb = found.get(tuple(best[k] for k in keys)), found.get(tuple(rows.iloc[0][k] for k in keys))
    if ga is None or gb is None:
        return ""  # no per-process records: no interval to read
    if ga.judge or gb.judge:
        return (ga.judge or gb.judge).split(" (")[0]
    lo, hi = iv.ratio_interval(ga, gb, "steady")
    if not np.isfinite(lo):
        return ""
    return "" if lo > 1.0 else f"within noise [{lo:.2f}, {hi:.2f}]"


def _slow(sub: pd.DataFrame) -> str:
    """The clause naming a cell's slow processes (:attr:`~gnn_batching.sweep.intervals.Group.slow_processes`),
    or ``""``."""
    if "slow_processes" not in sub or not (sub["slow_processes"] > 0).any():
        return ""
    slow = sub[sub["slow_processes"] > 0].sort_values("method")
    return (f"; slow processes (steady more than {iv.SLOW_PROCESS:.2f}x slower than their group's fastest; "
            "kept in the figures): " + ", ".join(f"{r['method']} {int(r['slow_processes'])} of {int(r['processes'])}"
                                                 for _, r in slow.iterrows()))


def verdict(df: pd.DataFrame) -> list[str]:
    """One sentence per cell of the sweep ``df`` (:func:`~gnn_batching.sweep.results.collect`):
    the fastest method against the next on each measure, with the 95 % interval of the ratio and
    the processes behind it (``no difference beyond noise`` when it holds 1; ``too short to
    judge`` when a run's steady window is too short or too noisy), the break-even, and test RMSE."""
    agg = comparison(df)
    keys = cell_keys(df)
    gkeys = group_keys(df)
    found = iv.groups(df, gkeys) if "run_dir" in df else {}
    tests = pairwise_tests(df)
    steps = int(df["steps"].max()) if "steps" in df else None
    lines = []
    for key, sub in agg.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        title = _cell_title(keys, key)
        if len(sub) < 2:
            lines.append(f"{title}: one method only ({sub['method'].iloc[0]}); nothing to compare{_slow(sub)}.")
            continue
        best, second = _winner(sub, "graphs_per_s_mean")
        text = (f"{title}: steady state: {_pair(found, gkeys, best, second, 'steady', 'graphs_per_s_mean')} "
                f"({best['graphs_per_s_mean']:.0f} graphs/s)")
        if "graphs_per_s_incl_compile_mean" in sub and np.isfinite(sub["graphs_per_s_incl_compile_mean"]).all():
            incl, incl2 = _winner(sub, "graphs_per_s_incl_compile_mean")
            over = f" over {steps} steps" if steps else ""
            text += (f"; including compilation{over}: "
                     f"{_pair(found, gkeys, incl, incl2, 'incl', 'graphs_per_s_incl_compile_mean')}")
            if incl["method"] != best["method"]:
                be = str(best.get("break_even_steps", "") or "")
                lo, hi = best.get("break_even_low", np.nan), best.get("break_even_high", np.nan)
                span = ""
                if isinstance(lo, float) and not np.isnan(lo):
                    span = " [" + ", ".join("never" if not np.isfinite(v) else f"{math.ceil(v):,}"
                                            for v in (lo, hi)) + "]"
                if be.isdigit():
                    ref = best["break_even_ref"]
                    lead = _steady_lead(found, gkeys, best, sub, ref)
                    text += (f"; {best['method']} would pay back its extra compilation after about {int(be):,} "
                             f"steps{span} (break-even vs {ref}), but its steady lead over {ref} is {lead}: no "
                             "choice for longer runs follows" if lead else
                             f"; {best['method']} pays back its extra compilation after about {int(be):,} steps"
                             f"{span} (break-even vs {ref}): for longer runs it is the faster choice")
                elif be == "never":
                    text += f"; {best['method']}'s faster steps do not pay back its extra compilation in this data"
                else:
                    text += "; the two measures rank them differently (see break-even in the table)"
            else:
                text += f"; {best['method']} is first on both measures"
        text += _slow(sub)
        sig_key = {k.removeprefix("axis:"): v for k, v in zip(keys, key)}
        lines.append(f"{text}; {_significance(tests, sig_key)}.")
    return lines


def format_verdict(df: pd.DataFrame) -> str:
    """The verdict as Markdown bullet points, headed."""
    return ("**Verdict** (from the table below; steady state excludes warm-up and compiling steps; [low, high]: "
            "95 % interval over the fresh processes behind each figure):\n\n") + \
        "\n".join(f"* {line}" for line in verdict(df))
