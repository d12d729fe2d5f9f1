"""The study's own published per-run results, shipped with the package (see ``README.md`` here):
its public repository's ``batch_data/`` CSVs, as the authors parsed them from their logs.

:func:`study_compiles` reads its recompilation counters for the comparison with our planned
counts (``gnn-batching study plan``).
"""

from __future__ import annotations

import os

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = {"100k": "100k_steps_qm9_aflow_schnet_mpeu_gpu_cpu.csv", "2M": "2M_steps_qm9_aflow_schnet_mpeu.csv",
         "100k-painn": "100k_steps_painn_cpu.csv", "2M-painn": "2M_steps_painn.csv"}
# our method name -> the study's (batching_type, batching_round_to_64)
STUDY_METHODS = {"static-pow2": ("static", False), "static-64": ("static", True), "dynamic": ("dynamic", None)}


def study_results(which: str = "100k") -> pd.DataFrame:
    """One of the study's result tables (``100k``, ``2M``, ``100k-painn``, ``2M-painn``)."""
    return pd.read_csv(os.path.join(HERE, FILES[which]))


# the runs' length -> the table holding their counters
COUNTER_TABLES = {100_000: "100k", 2_000_000: "2M"}


def study_compiles(dataset: str, method: str, batch_size: int, steps: int = 100_000) -> float | None:
    """The study's recompilation counter (mean over its runs) after ``steps`` (100k or 2M), or None
    if it has no such rows. Every run of a cell used one seed (42), so its runs agree; in the 2M
    table some static-pow2 rows report 0, which no run can have compiled (its first step compiles):
    those rows are left out as unlogged."""
    if method not in STUDY_METHODS or steps not in COUNTER_TABLES:
        return None
    df = study_results(COUNTER_TABLES[steps])
    kind, round64 = STUDY_METHODS[method]
    rows = df[(df["dataset"] == dataset) & (df["batching_type"] == kind) & (df["batch_size"] == batch_size)]
    if round64 is not None:
        rows = rows[rows["batching_round_to_64"] == round64]
    rows = rows["recompilation_counter"].dropna()
    rows = rows[rows > 0]
    return float(rows.mean()) if len(rows) else None
