"""``file:PATH``: any file ASE can read (extxyz, ASE db, CIF, POSCAR, ...), one file or a glob.

Targets come from ``atoms.info[KEY]`` or scalar calculator results (every numeric one is
offered), or from a side
CSV (``targets_csv``) whose rows follow the structures in order, or are matched by an
``index`` column (0-based, over all files in sorted order). Periodicity comes from ``pbc``.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from gnn_batching.data.structures import StructureSet, from_atoms_list
from gnn_batching.errors import BadEntryError, DataError


def scalar_properties(atoms) -> dict[str, float]:
    """Numeric ``atoms.info`` entries plus scalar calculator results (ASE's extxyz reader
    moves ``energy``/``free_energy`` from the comment line into a calculator)."""
    out = {k: float(v) for k, v in atoms.info.items()
           if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}
    calc = getattr(atoms, "calc", None)
    if calc is not None:
        for k, v in getattr(calc, "results", {}).items():
            if np.ndim(v) == 0 and isinstance(v, (int, float, np.number)):
                out.setdefault(k, float(v))
    return out


def targets_from_atoms(atoms_list) -> dict[str, np.ndarray]:
    """name -> (G,) values of every scalar property found on any structure (NaN where absent)."""
    scalars = [scalar_properties(a) for a in atoms_list]
    return {k: np.array([sc.get(k, np.nan) for sc in scalars]) for k in sorted({k for sc in scalars for k in sc})}


def read_files(pattern: str) -> tuple[list, list[str]]:
    import ase.io

    paths = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
    if not paths:
        raise DataError(f"{pattern}: no file matches")
    atoms_list, ids = [], []
    for path in paths:
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file")
        frames = []
        try:  # one structure at a time, so a failure names the structure it is in
            for a in ase.io.iread(path, index=":"):
                frames.append(a)
        except Exception as exc:  # ASE raises many types for unreadable input
            where = f"structure {len(frames) + 1} (counting from 1)" if frames else "its first structure"
            hint = " (an unknown element symbol?)" if isinstance(exc, KeyError) else ""
            raise DataError(f"{path}: ASE cannot read {where}: {type(exc).__name__}: {exc}{hint}") from None
        for i, a in enumerate(frames):
            atoms_list.append(a)
            ids.append(f"{os.path.basename(path)}:{i}")
    return atoms_list, ids


def load_file(
    pattern: str,
    target: str | None = None,
    targets_csv: str | None = None,
    skip_bad: bool = False,
) -> StructureSet:
    atoms_list, ids = read_files(pattern)
    n = len(atoms_list)
    targets: dict[str, np.ndarray] = {}
    if targets_csv:
        import pandas as pd

        try:
            df = pd.read_csv(targets_csv)
        except (OSError, ValueError) as exc:
            raise DataError(f"{targets_csv}: cannot read targets CSV ({exc})") from None
        if "index" in df.columns:
            idx = df["index"].to_numpy()
            if idx.min() < 0 or idx.max() >= n:
                raise DataError(f"{targets_csv}: column 'index' must lie in 0..{n - 1}")
        elif len(df) == n:
            idx = np.arange(n)
        else:
            raise DataError(f"{targets_csv}: {len(df)} rows for {n} structures and no 'index' column")
        for col in df.columns:
            if col != "index" and pd.api.types.is_numeric_dtype(df[col]):
                arr = np.full(n, np.nan)
                arr[idx] = df[col].to_numpy(np.float64)
                targets[col] = arr
    else:
        targets = targets_from_atoms(atoms_list)
    if not targets:
        raise DataError(f"{pattern}: no numeric targets in atoms.info; give a targets CSV (dataset.targets_csv)")
    chosen = target or (next(iter(targets)) if len(targets) == 1 else None)
    if chosen is None:
        raise DataError(f"{pattern}: several targets {sorted(targets)}; choose one with --target / dataset.target")
    if chosen not in targets:
        raise DataError(f"{pattern}: target {chosen!r} not found; available: {sorted(targets)}")
    keep, bad = [], []
    for i, a in enumerate(atoms_list):
        problem = None
        pos = a.get_positions()
        if len(a) == 0:
            problem = "no atoms"
        elif not np.isfinite(pos).all():
            problem = "NaN or infinite coordinates"
        elif (a.get_atomic_numbers() <= 0).any():
            problem = "unknown element (atomic number 0)"
        elif a.pbc.any() and abs(a.cell.volume) < 1e-6:
            problem = "periodic but zero-volume cell"
        elif not np.isfinite(targets[chosen][i]):
            calc = getattr(a, "calc", None)
            raw = a.info.get(chosen, getattr(calc, "results", {}).get(chosen) if calc is not None else None)
            problem = (f"target {chosen!r} is not a number ({raw!r})" if raw is not None
                       else f"missing target {chosen!r}")
        if problem:
            name, _, idx = ids[i].rpartition(":")
            msg = f"{name}: structure {int(idx) + 1} (counting from 1; id {ids[i]}): {problem}"
            if not skip_bad:
                raise BadEntryError(f"{os.path.dirname(pattern) or '.'}/{msg}")
            bad.append(msg)
        else:
            keep.append(i)
    return from_atoms_list(
        f"file:{pattern}",
        [atoms_list[i] for i in keep],
        {k: v[keep] for k, v in targets.items()},
        {k: "" for k in targets},
        [ids[i] for i in keep],
        chosen,
        skipped=bad,
    )
