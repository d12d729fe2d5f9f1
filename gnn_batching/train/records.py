"""The records a run writes as it goes: ``steps.csv``, ``evals.csv``, ``epochs.csv``, ``precompile.csv``
and ``status.json``.

Rows are kept in memory and written as atomic snapshots every ``every_s`` seconds and on the way
out (finished, interrupted or failed), so a killed run loses at most the last ``every_s`` seconds
of records and never leaves a half-written file.
"""

from __future__ import annotations

import os
import time

import pandas as pd

from gnn_batching.io import write_csv_atomic, write_json_atomic
from gnn_batching.rundir import EPOCHS, EVALS, PRECOMPILE, STATUS, STEPS
from gnn_batching.train.instruments import StepLog


class RunRecords:
    """Per-step and per-evaluation rows of one run, snapshotted into ``out_dir``."""

    def __init__(self, out_dir: str, epoch_stats: list[dict], every_s: float = 30.0):
        self.out_dir = out_dir
        self.steps = StepLog()
        self.evals: list[dict] = []
        self.ahead: list[dict] = []  # shapes compiled ahead of time (train/eval) and their seconds
        self._epoch_stats = epoch_stats  # the training loader's list, appended to as epochs start
        self.every_s = every_s
        self._last = time.perf_counter()

    def step(self, **row) -> None:
        """Record one training step; saves a snapshot if the last one is older than ``every_s``."""
        self.steps.add(**row)
        if time.perf_counter() - self._last >= self.every_s:
            self.save()

    def evaluation(self, row: dict) -> None:
        """Record one evaluation row (split, step, metrics, elapsed training time)."""
        self.evals.append(row)

    def precompiled(self, rows: list[dict]) -> None:
        """Record shapes compiled ahead of time (rows of :func:`~gnn_batching.train.precompile.precompile`)."""
        self.ahead.extend(rows)

    def precompile_frame(self) -> pd.DataFrame:
        """The ahead-of-time compilations: label, n_node, n_edge, n_graph, compile_s, restart (a shape
        compiled again after a restart) and segment (may be empty)."""
        return pd.DataFrame(self.ahead, columns=["label", "n_node", "n_edge", "n_graph", "compile_s", "restart",
                                                 "segment"])

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Steps, evaluations and per-epoch statistics as DataFrames."""
        return self.steps.frame(), pd.DataFrame(self.evals), pd.DataFrame(self._epoch_stats)

    def save(self) -> None:
        """Write ``steps.csv``, ``evals.csv``, ``epochs.csv`` and ``precompile.csv`` atomically."""
        steps, evals, epochs = self.frames()
        write_csv_atomic(os.path.join(self.out_dir, STEPS), steps)
        write_csv_atomic(os.path.join(self.out_dir, EVALS), evals)
        write_csv_atomic(os.path.join(self.out_dir, EPOCHS), epochs)
        write_csv_atomic(os.path.join(self.out_dir, PRECOMPILE), self.precompile_frame())
        self._last = time.perf_counter()

    def status(self, status: dict) -> None:
        """Write ``status.json`` (state of the run, steps done) atomically."""
        write_json_atomic(os.path.join(self.out_dir, STATUS), status)

    def snapshot(self) -> dict:
        """The step, evaluation and ahead-of-time rows as plain data (what a checkpoint keeps)."""
        return {"steps": self.steps.rows, "evals": self.evals, "ahead": self.ahead}

    def restore(self, snap: dict) -> None:
        """Continue from a :meth:`snapshot` (a resumed run)."""
        self.steps.rows = {k: list(v) for k, v in snap["steps"].items()}
        self.evals = list(snap["evals"])
        self.ahead = list(snap["ahead"])

    def __len__(self) -> int:
        return len(self.steps)
