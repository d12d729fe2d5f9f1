"""Whose folder is it: a sweep writes only into an output folder that is empty, is its own, or is
named with ``--force``.

* Empty or absent: the sweep takes it (its ``sweep.json`` is written first, so from then on the
  folder is its own, also when the sweep is interrupted before its first cell finished).
* Holding a ``sweep.json`` of the same sweep (same name and grid): its own; the sweep resumes there.
* Holding a ``sweep.json`` of another sweep: refused, with or without ``--force``. Two sweeps in
  one folder would be collected into one table (cells of both grids, the other's title), so a
  merge is never started, not half-done.
* Holding anything else (a results.csv of the user's, notes, another tool's output): refused
  unless ``--force``; with ``--force`` the sweep writes its own files beside the others, and a file
  it would replace (``results.csv``, ``report.md``, ``figures/``, ...) is still refused: nothing
  that is not the sweep's is ever overwritten.

Every refusal is one line naming the file and the options.
"""

from __future__ import annotations

import json
import os

from gnn_batching.errors import UserError
from gnn_batching.sweep.layout import RUNS, SWEEP_FILE, read_json

# what a sweep writes at the top of its output folder (layout.py's picture)
SWEEP_OUTPUTS = (SWEEP_FILE, RUNS, "results.csv", "results.parquet", "comparison.csv", "significance.csv",
                 "versus_study.csv", "study_compare.csv", "study_ratios.csv", "figures", "report.md",
                 "report.html", "submitit")
# manifest keys that are not the sweep's identity: where its file was read from, its base settings
# (a changed setting is refused per cell by grid.check_unchanged, naming the cell and the key), and
# its repeats (more repeats: the same cells, more processes each)
NOT_IDENTITY = ("source", "base", "repeats")


def _plain(x: object) -> object:
    """``x`` as JSON would give it back (tuples -> lists), so a manifest compares with a fresh one."""
    return json.loads(json.dumps(x, default=str))


def manifest_changes(saved: dict, manifest: dict) -> list[str]:
    """How a folder's saved ``sweep.json`` differs from this sweep's, on the keys both name
    (``source`` and ``base`` excepted): ``["grid: {...} -> {...}"]``; empty for the same sweep."""
    out = []
    for key in sorted(set(saved) & set(manifest)):
        if key in NOT_IDENTITY:
            continue
        old, new = _plain(saved[key]), _plain(manifest[key])
        if old != new:
            out.append(f"{key}: {json.dumps(old)} -> {json.dumps(new)}")
    return out


def claim_output_dir(output_dir: str, manifest: dict, force: bool = False) -> None:
    """Refuse an output folder that is not this sweep's to write into (nothing is written here).

    Args:
      output_dir: the sweep's ``output_dir``.
      manifest: the ``sweep.json`` this sweep will write (``name``, ``grid``, ...).
      force: ``--force``: a folder holding other files may be used; files of the sweep's own
        names there, and another sweep's ``sweep.json``, are still refused.

    Raises:
      UserError: one line naming the file that is not the sweep's and what to do instead.
    """
    if not os.path.exists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise UserError(f"{output_dir}: exists and is not a folder; choose another output_dir (--set output_dir=...)")
    present = sorted(os.listdir(output_dir))
    if not present:
        return
    saved_path = os.path.join(output_dir, SWEEP_FILE)
    elsewhere = "choose another output_dir (--set output_dir=...)"
    if os.path.exists(saved_path):
        saved = read_json(saved_path)
        if not isinstance(saved, dict):
            raise UserError(f"{saved_path}: not a sweep manifest; {elsewhere}")
        diffs = manifest_changes(saved, manifest)
        if not diffs:
            return
        raise UserError(f"{saved_path}: {output_dir} holds another sweep ({'; '.join(diffs[:2])}); two sweeps never "
                        f"share a folder (their tables would mix), also not with --force: {elsewhere}, or delete "
                        f"{output_dir} to start this sweep there")
    clashes = [n for n in present if n in SWEEP_OUTPUTS]
    if force and not clashes:
        return
    first = os.path.join(output_dir, (clashes or present)[0])
    more = f" (and {len(present) - 1} more)" if len(present) > 1 else ""
    if force:
        raise UserError(f"{first}: not this sweep's, and the sweep would write a file of that name; --force never "
                        f"replaces a file the sweep did not write: move it away, or {elsewhere}")
    raise UserError(f"{first}: {output_dir} is not empty and not this sweep's (no {SWEEP_FILE}){more}; "
                    f"{elsewhere}, or pass --force to write the sweep beside these files (a file the sweep "
                    "would replace is still refused)")
