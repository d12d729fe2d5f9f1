"""QM9, offline: the qm9pack CSV files, or the original ``dsgdb9nsd_*.xyz`` distribution.

Energies in the sources are in Hartree; every energy target here is converted to eV.
The default target (the study's) is ``U0_atomization``: U0 minus the B3LYP/6-31G(2df,p)
atomic reference energies of H, C, N, O, F, in eV.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import tarfile
from collections.abc import Iterator

import numpy as np

from gnn_batching.data.structures import StructureSet
from gnn_batching.errors import BadEntryError, DataError

HARTREE_EV = 27.211386
ATOM_REF_U0_HA = {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730}
SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}

# name -> (qm9pack column, 1-based position among the 15 xyz properties after "gdb N", unit, scale)
TARGETS: dict[str, tuple[str, int, str, float]] = {
    "U0_atomization": ("InternalEnergy_0K_au", 11, "eV", HARTREE_EV),
    "U0": ("InternalEnergy_0K_au", 11, "eV", HARTREE_EV),
    "U": ("InternalEnergy_298K_au", 12, "eV", HARTREE_EV),
    "H": ("Enthalphy_298K_au", 13, "eV", HARTREE_EV),
    "G": ("GibbsFreeEnergy_298K_au", 14, "eV", HARTREE_EV),
    "homo": ("HOMO_au", 6, "eV", HARTREE_EV),
    "lumo": ("LUMO_au", 7, "eV", HARTREE_EV),
    "gap": ("HOMO_LUMO_gap_au", 8, "eV", HARTREE_EV),
    "zpve": ("ZPVE_au", 10, "eV", HARTREE_EV),
    "mu": ("Dipole_debye", 4, "D", 1.0),
    "alpha": ("Polarizability_bohr3", 5, "bohr^3", 1.0),
    "r2": ("R2_bohr2", 9, "bohr^2", 1.0),
    "cv": ("Heatcapacity_Cv_cal_mol_K", 15, "cal/(mol K)", 1.0),
}
DEFAULT_TARGET = "U0_atomization"
N_QM9 = 130_831


def qm9pack_dir() -> str:
    """Folder of qm9pack's CSV files, found without importing the package."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "QM9 needs the package qm9pack: pip install 'gnn-batching[qm9]' (or pip install qm9pack)"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def qm9pack_files() -> list[str]:
    d = qm9pack_dir()
    files = [os.path.join(d, f"qm9_part{i}.csv") for i in (1, 2, 3)]
    for f in files:
        if not os.path.exists(f):
            raise DataError(f"{f}: missing from the qm9pack installation")
    return files


def _atomization(u0_ha: np.ndarray, numbers: np.ndarray, n_atoms: np.ndarray) -> np.ndarray:
    ref = np.zeros(128)
    for z, e in ATOM_REF_U0_HA.items():
        ref[z] = e
    per_atom = ref[numbers]
    seg = np.zeros(len(n_atoms) + 1, dtype=np.int64)
    np.cumsum(n_atoms, out=seg[1:])
    ref_sum = np.add.reduceat(per_atom, seg[:-1]) if len(n_atoms) else np.zeros(0)
    return (u0_ha - ref_sum) * HARTREE_EV


def _targets_from_columns(cols: dict[str, np.ndarray], numbers, n_atoms):
    targets, units = {}, {}
    for name, (col, _, unit, scale) in TARGETS.items():
        raw = np.asarray(cols[col], dtype=np.float64)
        if name == "U0_atomization":
            targets[name] = _atomization(raw, numbers, n_atoms)
        else:
            targets[name] = raw * scale
        units[name] = unit
    return targets, units


def _parse_numbers(text: str) -> np.ndarray:
    """Comma-separated numbers, tolerant of '0.', '1.' and Mathematica '*^' exponents."""
    text = text.replace("*^", "e")
    parts = [p for p in text.split(",") if p.strip()]
    return np.array(parts, dtype=np.float64)


def _elements(text: str) -> list[str]:
    """"['C','H']" (one row, or many rows joined by commas) -> ['C', 'H']."""
    return re.sub(r"[\[\]' ]", "", text).split(",")


def _coordinates(text: str) -> np.ndarray:
    """"[[x,y,z],...]" (one row, or many joined by commas) -> flat array of numbers."""
    return _parse_numbers(re.sub(r"[\[\]]", "", text))


def load_qm9pack(files: list[str] | None = None, skip_bad: bool = False, progress=None) -> StructureSet:
    """All molecules of qm9pack's CSV files (or the given CSV files of the same layout)."""
    import pandas as pd

    files = files or qm9pack_files()
    cols = ["XYZ_file", "N_atoms", "Elements", "XYZ_Ang"] + sorted({c for c, *_ in TARGETS.values()})
    frames = []
    for f in files:
        try:
            frames.append(pd.read_csv(f, usecols=cols, dtype={"Elements": str, "XYZ_Ang": str}))
        except (OSError, ValueError) as exc:
            raise DataError(f"{f}: cannot read QM9 CSV ({exc})") from None
        frames[-1]["src_file"] = os.path.basename(f)
        frames[-1]["src_row"] = np.arange(len(frames[-1])) + 2  # 1-based, after the header line
        if progress:
            progress(len(frames), len(files))
    df = pd.concat(frames, ignore_index=True)
    bad: list[str] = []

    def parse_all():
        elements = _elements(",".join(df["Elements"].astype(str)))
        xyz = _coordinates(",".join(df["XYZ_Ang"].astype(str)))
        return elements, xyz, df["N_atoms"].to_numpy(np.int64)

    try:
        elements, xyz, n_atoms = parse_all()
        ok_fast = len(elements) == n_atoms.sum() and xyz.size == 3 * n_atoms.sum()
    except (ValueError, TypeError):
        ok_fast = False
    if not ok_fast:  # slow path: find the bad rows and name them
        keep = []
        for i, row in enumerate(df.itertuples(index=False)):
            where = f"{row.src_file} row {row.src_row} ({row.XYZ_file})"
            try:
                el = _elements(str(row.Elements))
                xy = _coordinates(str(row.XYZ_Ang))
                if len(el) != row.N_atoms or xy.size != 3 * row.N_atoms:
                    raise ValueError(f"{len(el)} elements and {xy.size // 3} coordinates for N_atoms={row.N_atoms}")
                keep.append(i)
            except (ValueError, TypeError) as exc:
                if not skip_bad:
                    raise BadEntryError(f"{where}: malformed entry: {exc}") from None
                bad.append(where)
        df = df.iloc[keep].reset_index(drop=True)
        elements, xyz, n_atoms = parse_all()
    df, elements, xyz, n_atoms = _drop_bad_atoms(df, elements, xyz, n_atoms, skip_bad, bad)
    numbers = np.array([SYMBOLS[e] for e in elements], dtype=np.int16)
    colvals = {c: df[c].to_numpy() for c, *_ in TARGETS.values()}
    targets, units = _targets_from_columns(colvals, numbers, n_atoms)
    ids = df["XYZ_file"].astype(str).str.replace(".xyz", "", regex=False).to_numpy(dtype=str)
    s = StructureSet(
        name="qm9",
        numbers=numbers,
        positions=xyz.reshape(-1, 3),
        n_atoms=n_atoms,
        cells=np.zeros((len(n_atoms), 3, 3)),
        pbc=np.zeros((len(n_atoms), 3), dtype=bool),
        targets=targets,
        target_units=units,
        ids=ids,
        default_target=DEFAULT_TARGET,
        skipped=bad,
    )
    if not skip_bad:  # with skip_bad, load_dataset skips (and names) entries missing the chosen target
        _check_targets(s)
    return s


def _drop_bad_atoms(df, elements: list[str], xyz: np.ndarray, n_atoms: np.ndarray, skip_bad: bool, bad: list[str]):
    """Rows whose atoms have an unknown element or a non-finite coordinate: a DataError naming
    the file and row, or (``skip_bad``) dropped and named in ``bad``."""
    known = np.isin(np.asarray(elements), list(SYMBOLS))
    finite = np.isfinite(xyz.reshape(-1, 3)).all(axis=1)
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]]).astype(np.int64)
    row_unknown = np.add.reduceat((~known).astype(np.int64), starts) > 0 if len(n_atoms) else np.zeros(0, bool)
    row_nonfinite = np.add.reduceat((~finite).astype(np.int64), starts) > 0 if len(n_atoms) else np.zeros(0, bool)
    bad_rows = np.flatnonzero(row_unknown | row_nonfinite)
    if not len(bad_rows):
        return df, elements, xyz, n_atoms
    for i in bad_rows.tolist():
        where = f"{df['src_file'][i]} row {df['src_row'][i]} ({df['XYZ_file'][i]})"
        if row_unknown[i]:
            a = int(starts[i])
            el = next(e for e in elements[a : a + int(n_atoms[i])] if e not in SYMBOLS)
            why = f"unknown element {el!r} (QM9 has {', '.join(SYMBOLS)})"
        else:
            why = "NaN or infinite coordinate"
        if not skip_bad:
            raise BadEntryError(f"{where}: {why}")
        bad.append(f"{where}: {why}")
    keep_rows = np.setdiff1d(np.arange(len(n_atoms)), bad_rows)
    atom_keep = np.repeat(np.isin(np.arange(len(n_atoms)), keep_rows), n_atoms)
    elements = [e for e, k in zip(elements, atom_keep.tolist()) if k]
    xyz = xyz.reshape(-1, 3)[atom_keep].reshape(-1)
    return df.iloc[keep_rows].reset_index(drop=True), elements, xyz, n_atoms[keep_rows]


def _check_targets(s: StructureSet) -> None:
    for name, t in s.targets.items():
        if not np.isfinite(t).all():
            i = int(np.argmax(~np.isfinite(t)))
            raise DataError(f"{s.name}: entry {s.ids[i]} has a missing or non-finite target {name!r}")


# ---------------------------------------------------------------- original xyz format


def _iter_xyz_sources(path: str) -> Iterator[tuple[str, str]]:
    """(name, text) for each dsgdb9nsd_*.xyz in a tarball, a directory or a glob."""
    if os.path.isdir(path):
        names = sorted(glob.glob(os.path.join(path, "*.xyz")))
        if not names:
            raise DataError(f"{path}: no *.xyz files in this directory")
        for n in names:
            with open(n, encoding="utf-8", errors="replace") as fh:
                yield n, fh.read()
    elif tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if member.isfile() and member.name.endswith(".xyz"):
                    fh = tar.extractfile(member)
                    yield f"{path}:{member.name}", fh.read().decode("utf-8", errors="replace")
    else:
        names = sorted(glob.glob(path))
        if not names:
            raise DataError(f"{path}: not a tarball, a directory or a glob that matches files")
        for n in names:
            with open(n, encoding="utf-8", errors="replace") as fh:
                yield n, fh.read()


def _num(tok: str) -> float:
    return float(tok.replace("*^", "e"))


def parse_xyz_text(name: str, text: str) -> tuple[list[int], np.ndarray, list[float]]:
    """One dsgdb9nsd file: (atomic numbers, (n,3) positions, 15 properties after 'gdb N')."""
    lines = text.splitlines()
    try:
        n = int(lines[0].strip())
        props = lines[1].split()
        if props[0] != "gdb" or len(props) < 17:
            raise ValueError("line 2 is not 'gdb N' followed by 15 properties")
        values = [_num(t) for t in props[2:17]]
        zs, pos = [], []
        for k in range(n):
            parts = lines[2 + k].split()
            if parts[0] not in SYMBOLS:
                raise ValueError(f"unknown element {parts[0]!r} on line {3 + k}")
            zs.append(SYMBOLS[parts[0]])
            pos.append([_num(t) for t in parts[1:4]])
    except (IndexError, ValueError) as exc:
        raise DataError(f"{name}: malformed QM9 xyz entry: {exc}") from None
    return zs, np.array(pos, dtype=np.float64).reshape(-1, 3), values


def load_qm9_xyz(path: str, skip_bad: bool = False) -> StructureSet:
    """The original distribution: ``dsgdb9nsd.xyz.tar.bz2``, a directory or a glob of xyz files."""
    zs_all, pos_all, n_atoms, props, ids, bad = [], [], [], [], [], []
    for name, text in _iter_xyz_sources(path):
        try:
            zs, pos, values = parse_xyz_text(name, text)
            if not np.isfinite(pos).all():
                raise DataError(f"{name}: NaN or infinite coordinates")
        except DataError as exc:
            if not skip_bad:
                raise BadEntryError(str(exc)) from None
            bad.append(name)
            continue
        zs_all.extend(zs)
        pos_all.append(pos)
        n_atoms.append(len(zs))
        props.append(values)
        ids.append(os.path.basename(name.split(":")[-1]).replace(".xyz", ""))
    if not ids:
        raise DataError(f"{path}: no usable QM9 entries")
    numbers = np.array(zs_all, dtype=np.int16)
    n_atoms_arr = np.array(n_atoms, dtype=np.int64)
    p = np.array(props)
    # xyz property order after "gdb N": A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv
    cols = {col: p[:, idx - 1] for col, idx, *_ in TARGETS.values()}
    targets, units = _targets_from_columns(cols, numbers, n_atoms_arr)
    s = StructureSet(
        name="qm9",
        numbers=numbers,
        positions=np.concatenate(pos_all),
        n_atoms=n_atoms_arr,
        cells=np.zeros((len(ids), 3, 3)),
        pbc=np.zeros((len(ids), 3), dtype=bool),
        targets=targets,
        target_units=units,
        ids=np.array(ids, dtype=str),
        default_target=DEFAULT_TARGET,
        skipped=bad,
    )
    return s
