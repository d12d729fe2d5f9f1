"""The sweep directory layout, in one leaf module every other sweep module reads.

::

    <output_dir>/
      sweep.json          the sweep's name, source file, grid and base config (written first)
      runs/<cell>/        one run directory per grid cell (see gnn_batching.rundir)
      runs/<cell>__rep<k>/  the same cell again in a fresh process (repeats)
      runs/<cell>.log     that cell's console output
      results.csv/.parquet, comparison.csv, significance.csv, figures/, report.md|html

A cell is finished when ``runs/<cell>/summary.json`` exists (a run writes it last, atomically).
"""

from __future__ import annotations

import glob
import json
import os

from gnn_batching.errors import UserError
from gnn_batching.rundir import SUMMARY

SWEEP_FILE = "sweep.json"
RUNS = "runs"
REPEAT = "__rep"  # a repeat's cell id: <cell>__rep<k> (k >= 1; repeat 0 is the cell itself)


def repeat_of(cell_id: str) -> int:
    """The repeat index of a cell id (0 for the cell itself)."""
    head, sep, tail = cell_id.rpartition(REPEAT)
    return int(tail) if sep and head and tail.isdigit() else 0


def runs_dir(sweep_dir: str) -> str:
    """Directory holding a sweep's run directories."""
    return os.path.join(sweep_dir, RUNS)


def cell_dir(sweep_dir: str, cell_id: str) -> str:
    """Run directory of cell ``cell_id``."""
    return os.path.join(sweep_dir, RUNS, cell_id)


def cell_log(sweep_dir: str, cell_id: str) -> str:
    """Log file of cell ``cell_id`` (next to its run directory)."""
    return cell_dir(sweep_dir, cell_id) + ".log"


def finished_runs(sweep_dir: str) -> list[str]:
    """Run directories of the finished cells, sorted by cell name."""
    return [os.path.dirname(p) for p in sorted(glob.glob(os.path.join(runs_dir(sweep_dir), "*", SUMMARY)))]


def read_json(path: str) -> dict:
    """A JSON file of the layout; missing or unreadable -> a UserError naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: missing; the sweep directory is incomplete (re-run the sweep)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def sweep_info(sweep_dir: str) -> dict:
    """The sweep's ``sweep.json`` (its grid and cells).

    Raises:
      UserError: if ``sweep_dir`` is not a sweep directory.
    """
    path = os.path.join(sweep_dir, SWEEP_FILE)
    if not os.path.exists(path):
        raise UserError(f"{sweep_dir}: not a sweep directory (no {SWEEP_FILE}); run `gnn-batching sweep` first")
    return read_json(path)
