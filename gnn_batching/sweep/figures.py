"""Every figure of a sweep: ours (:mod:`gnn_batching.sweep.plots`) and the study's
(:mod:`gnn_batching.study.figures`), written into ``SWEEP/figures``."""

from __future__ import annotations

import os

import pandas as pd

from gnn_batching.io import write_csv_atomic
from gnn_batching.study import figures as study_figures
from gnn_batching.sweep import plots
from gnn_batching.sweep.results import collect
from gnn_batching.sweep.significance import pairwise_tests

FIGURES = plots.FIGURES + study_figures.FIGURES


def plot_all(sweep_dir: str, fmt: str = "png", df: pd.DataFrame | None = None) -> list[str]:
    """Write every figure into ``sweep_dir/figures`` and the significance table into
    ``sweep_dir/significance.csv``.

    Args:
        sweep_dir: the sweep's ``output_dir``.
        fmt: ``png`` or ``pdf``.
        df: the sweep's collected table (:func:`collect`), if the caller already has it.

    Returns:
        The paths of the figures written.
    """
    if df is None:
        df = collect(sweep_dir)  # reads only; the tables are written by `gnn-batching results`/`report`
    out_dir = os.path.join(sweep_dir, "figures")
    os.makedirs(out_dir, exist_ok=True)
    tests = pairwise_tests(df)
    write_csv_atomic(os.path.join(sweep_dir, "significance.csv"), tests)
    return [plots.plot_significance(df, out_dir, fmt, tests) if fn is plots.plot_significance else fn(df, out_dir, fmt)
            for fn in FIGURES]
