"""Significance of differences in final test error between batching methods.

For each cell (dataset, model, batch size and every other grid axis except the seed) and each
pair of methods, across seeds (repeats of one seed averaged first): Welch's t-test
(unequal variances) and the Mann-Whitney U rank test, two-sided. P-values are Holm-corrected
over ALL comparisons of the sweep for each test (family-wise error across the whole table).
With fewer than 2 seeds per method no test is possible and the row says so.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from gnn_batching.sweep.results import cell_keys


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values (NaN entries are left NaN and not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok])]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _per_seed(g: pd.DataFrame, method: str, metric: str) -> np.ndarray:
    """One value per seed: repeats of a seed (fresh processes for timing) learn the same thing,
    so counting them as separate samples would fake significance."""
    rows = g[g["method"] == method]
    if "seed" in rows:
        return rows.groupby("seed")[metric].mean().dropna().to_numpy(float)
    return rows[metric].dropna().to_numpy(float)


def pairwise_tests(df: pd.DataFrame, metric: str = "test_rmse") -> pd.DataFrame:
    """One row per pair of methods within each cell (every grid axis but method and seed fixed).

    Welch's test needs variance: when both groups have zero spread it is "not testable" (NaN),
    never p = 0 (identical constants would otherwise look infinitely significant).
    """
    cells = cell_keys(df)
    rows = []
    for key, g in df.groupby(cells, dropna=False):
        methods = sorted(g["method"].unique())
        for a, b in itertools.combinations(methods, 2):
            xa, xb = _per_seed(g, a, metric), _per_seed(g, b, metric)
            row = {**{k.removeprefix("axis:"): v for k, v in zip(cells, key)}, "method_a": a, "method_b": b,
                   "metric": metric, "n_a": len(xa), "n_b": len(xb),
                   "mean_a": xa.mean() if len(xa) else np.nan, "mean_b": xb.mean() if len(xb) else np.nan,
                   "welch_p": np.nan, "mannwhitney_p": np.nan}
            if len(xa) >= 2 and len(xb) >= 2:
                if np.std(xa) > 0 or np.std(xb) > 0:
                    with warnings.catch_warnings():  # nearly equal seeds: scipy warns, and answers
                        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
                        row["welch_p"] = float(stats.ttest_ind(xa, xb, equal_var=False).pvalue)
                row["mannwhitney_p"] = float(stats.mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
            rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out["welch_p_holm"] = holm(out["welch_p"].to_numpy())
        out["mannwhitney_p_holm"] = holm(out["mannwhitney_p"].to_numpy())
    return out
