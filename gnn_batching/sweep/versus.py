"""The best new batching method against the best of the study's three, per cell.

For every cell (dataset, model, batch size and every other grid axis but the seed) that holds
at least one of the study's methods (``static-pow2``, ``static-64``, ``dynamic``) and one method
beyond it (``buckets``, ``packed``, ``autobatch``: a method's ``family``; ``static-max`` and
``static-exact`` are the study's kind of padding, neither side), two comparisons, each choosing
its winners on its own measure (mean over seeds):

* steady state: the best new method's graphs/s over the best study method's graphs/s;
* including compilation: the same with ``graphs_per_s_incl_compile`` (every step and the
  up-front compiles, over train_wall_s).

Each ratio has its 95 % interval over the fresh processes behind the two winners (Welch's t on
log graphs/s, :func:`gnn_batching.sweep.intervals.ratio_interval`, as every speedup of the
comparison table), and a verdict: faster, slower, or no difference beyond noise. Beside them the
**fill ceiling**: the steady winners' edge fill ratio (new / study). A step costs about its padded
size on a CPU, so removing padding alone can buy at most this much; a ratio far above it is
noise or another effect, one far below it is room the new method leaves.

Alongside, the two steady-state winners' test RMSE and the Holm-corrected Welch p-value of
their difference (corrected over every pairwise comparison of the sweep, as in the report).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from gnn_batching.batching.registry import methods_of
from gnn_batching.io import write_csv_atomic
from gnn_batching.sweep.results import cell_keys, comparison, group_keys
from gnn_batching.sweep.significance import pairwise_tests

STUDY_METHODS = methods_of("study")  # static-pow2, static-64, dynamic
NEW_METHODS = methods_of("beyond")  # buckets, packed, autobatch (static-max / static-exact are neither)


def versus_study(df: pd.DataFrame, goal: float = 1.3) -> pd.DataFrame:
    """One row per cell with both kinds of method (empty if none).

    Args:
      df: a sweep's collected table (:func:`gnn_batching.sweep.results.collect`).
      goal: the speedup the ``meets_goal`` column asks for on BOTH measures.

    Returns:
      Columns: the cell keys, ``study_steady``/``new_steady`` (winning methods),
      ``study_graphs_per_s``/``new_graphs_per_s``, ``ratio_steady`` with ``ratio_steady_low`` /
      ``_high`` (its 95 % interval; NaN without per-step records) and ``verdict_steady``, the same
      with ``_incl`` (including compilation), ``fill_ceiling`` (edge fill of the steady winners,
      new / study), ``study_test_rmse``/``new_test_rmse`` (steady winners), ``welch_p_holm`` and
      ``meets_goal``.
    """
    from gnn_batching.sweep import intervals as iv

    agg = comparison(df)
    cells = cell_keys(df)
    tests = pairwise_tests(df)
    keys = [k.removeprefix("axis:") for k in cells]
    gkeys = group_keys(df)
    found = iv.groups(df, gkeys) if "run_dir" in df else {}
    rows = []
    for key, g in agg.groupby(cells, dropna=False):
        study = g[g["method"].isin(STUDY_METHODS)]
        new = g[g["method"].isin(NEW_METHODS)]
        if not len(study) or not len(new):
            continue
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        for suffix, col in (("", "graphs_per_s_mean"), ("_incl", "graphs_per_s_incl_compile_mean")):
            s, n = study.loc[study[col].idxmax()], new.loc[new[col].idxmax()]
            name = "steady" if not suffix else "incl"
            row[f"study_{name}"], row[f"new_{name}"] = s["method"], n["method"]
            row[f"study_graphs_per_s{suffix}"], row[f"new_graphs_per_s{suffix}"] = s[col], n[col]
            row[f"ratio_{name}"] = ratio = n[col] / s[col]
            gn, gs = (found.get(tuple(x[k] for k in gkeys)) for x in (n, s))
            lo, hi = iv.ratio_interval(gn, gs, name) if gn and gs else (float("nan"), float("nan"))
            row[f"ratio_{name}_low"], row[f"ratio_{name}_high"] = lo, hi
            row[f"verdict_{name}"] = iv.verdict_word(ratio, lo, hi)
        s = study.loc[study["graphs_per_s_mean"].idxmax()]
        n = new.loc[new["graphs_per_s_mean"].idxmax()]
        fills = (n.get("edge_fill_mean"), s.get("edge_fill_mean"))
        row["fill_ceiling"] = (float(fills[0]) / float(fills[1]) if all(f is not None and np.isfinite(f) and f > 0
                                                                          for f in fills) else float("nan"))
        row["study_test_rmse"], row["new_test_rmse"] = s["test_rmse_mean"], n["test_rmse_mean"]
        row["welch_p_holm"] = _pair_p(tests, dict(zip(keys, key)), s["method"], n["method"])
        row["meets_goal"] = bool(row["ratio_steady"] >= goal and row["ratio_incl"] >= goal)
        rows.append(row)
    return pd.DataFrame(rows)


def _ratio_text(r: pd.Series, name: str) -> str:
    """A ratio with its interval, and "within noise" where its verdict is ``same``."""
    text = f"{r[f'ratio_{name}']:.2f}x"
    if r[f"verdict_{name}"] != "no interval":
        text += f" [{r[f'ratio_{name}_low']:.2f}, {r[f'ratio_{name}_high']:.2f}]"
        text += " within noise" if r[f"verdict_{name}"] == "same" else ""
    return text


def write_versus(sweep_dir: str, df: pd.DataFrame) -> pd.DataFrame:
    """:func:`versus_study` of ``df``, also written to ``versus_study.csv`` when it has rows."""
    v = versus_study(df)
    if len(v):
        write_csv_atomic(os.path.join(sweep_dir, "versus_study.csv"), v)
    return v


def _pair_p(tests: pd.DataFrame, cell: dict, a: str, b: str) -> float:
    if not len(tests):
        return float("nan")
    m = np.ones(len(tests), bool)
    for k, v in cell.items():
        m &= (tests[k] == v).to_numpy() if not pd.isna(v) else tests[k].isna().to_numpy()
    pair = {a, b}
    m &= np.array([{x, y} == pair for x, y in zip(tests["method_a"], tests["method_b"])])
    return float(tests.loc[m, "welch_p_holm"].iloc[0]) if m.any() else float("nan")


def format_versus(v: pd.DataFrame, goal: float = 1.3) -> str:
    """:func:`versus_study` as a Markdown table with a one-line reading under it."""
    if not len(v):
        return ""
    keys = [c for c in v.columns if c not in _COLS]
    head = [*keys, "best study (steady)", "best new (steady)", "ratio [95 %]", "fill ceiling",
            "best study (incl. compile)", "best new (incl. compile)", "ratio incl. [95 %]", "test RMSE study / new",
            "Holm p", f">= {goal}x both"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in v.iterrows():
        lines.append("| " + " | ".join([
            *(str(r[k]) for k in keys),
            f"{r['study_steady']} {r['study_graphs_per_s']:.0f}", f"{r['new_steady']} {r['new_graphs_per_s']:.0f}",
            _ratio_text(r, "steady"),
            f"{r['fill_ceiling']:.2f}x" if np.isfinite(r.get("fill_ceiling", np.nan)) else "-",
            f"{r['study_incl']} {r['study_graphs_per_s_incl']:.0f}",
            f"{r['new_incl']} {r['new_graphs_per_s_incl']:.0f}",
            _ratio_text(r, "incl"), f"{r['study_test_rmse']:.4g} / {r['new_test_rmse']:.4g}",
            f"{r['welch_p_holm']:.3g}", "yes" if r["meets_goal"] else "no",
        ]) + " |")
    met = int(v["meets_goal"].sum())
    lines += ["", f"graphs/s are means over seeds; each measure picks its own winners; [95 %]: the ratio's interval "
                  f"over the processes behind the two winners ('within noise': it holds 1). Fill ceiling: the steady "
                  f"winners' edge fill, new / study (what removing padding alone can buy). {met} of {len(v)} cells "
                  f"reach {goal}x on both measures."]
    return "\n".join(lines)


_COLS = {"study_steady", "new_steady", "study_graphs_per_s", "new_graphs_per_s", "ratio_steady", "study_incl",
         "new_incl", "study_graphs_per_s_incl", "new_graphs_per_s_incl", "ratio_incl", "study_test_rmse",
         "new_test_rmse", "welch_p_holm", "meets_goal", "ratio_steady_low", "ratio_steady_high", "verdict_steady",
         "ratio_incl_low", "ratio_incl_high", "verdict_incl", "fill_ceiling"}
