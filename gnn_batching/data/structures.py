"""StructureSet: what every data source produces, before any graph is built.

A columnar container of atomic structures (no per-structure Python objects on
the hot path). Shapes: G structures, N atoms in total.

* ``numbers``   (N,)    int16  atomic numbers, concatenated structure by structure
* ``positions`` (N, 3)  float64 Cartesian positions in Angstrom
* ``n_atoms``   (G,)    int64  atoms per structure
* ``cells``     (G,3,3) float64 cell vectors as rows (zeros for molecules)
* ``pbc``       (G, 3)  bool   periodic directions
* ``targets``   name -> (G,) float64, with ``target_units`` name -> unit string
* ``ids``       (G,)    str    a stable name for each entry, used in every error message
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gnn_batching.errors import DataError


@dataclass
class StructureSet:
    name: str
    numbers: np.ndarray
    positions: np.ndarray
    n_atoms: np.ndarray
    cells: np.ndarray
    pbc: np.ndarray
    targets: dict[str, np.ndarray]
    target_units: dict[str, str]
    ids: np.ndarray
    default_target: str
    synthetic: bool = False
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def atom_offsets(self) -> np.ndarray:
        """(G+1,) start of each structure's atoms in ``numbers``/``positions``."""
        out = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.n_atoms, out=out[1:])
        return out

    def validate(self) -> None:
        """Check array consistency, finite coordinates and positive cell volumes."""
        g = len(self)
        if int(self.n_atoms.sum()) != self.numbers.shape[0] or self.positions.shape != (
            self.numbers.shape[0],
            3,
        ):
            raise DataError(f"{self.name}: atom arrays do not match the per-structure counts")
        for key, arr in (("cells", self.cells), ("pbc", self.pbc), ("ids", self.ids)):
            if arr.shape[0] != g:
                raise DataError(f"{self.name}: {key} has {arr.shape[0]} rows for {g} structures")
        for tname, t in self.targets.items():
            if t.shape != (g,):
                raise DataError(f"{self.name}: target {tname!r} has shape {t.shape}, expected ({g},)")
        if (self.n_atoms < 1).any():
            i = int(np.argmax(self.n_atoms < 1))
            raise DataError(f"{self.name}: entry {self.ids[i]} has no atoms")
        bad = ~np.isfinite(self.positions).all(axis=1)
        if bad.any():
            atom = int(np.argmax(bad))
            i = int(np.searchsorted(self.atom_offsets, atom, side="right") - 1)
            raise DataError(f"{self.name}: entry {self.ids[i]} has NaN or infinite coordinates")
        periodic = self.pbc.any(axis=1)
        if periodic.any():
            vol = np.abs(np.linalg.det(self.cells[periodic]))
            if (vol < 1e-6).any():
                i = int(np.flatnonzero(periodic)[int(np.argmax(vol < 1e-6))])
                raise DataError(f"{self.name}: entry {self.ids[i]} has a zero-volume cell")

    def select(self, index: np.ndarray) -> StructureSet:
        """A new set holding the structures at ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        off = self.atom_offsets
        counts = self.n_atoms[index]
        atom_idx = ranges(off[index], counts)
        return StructureSet(
            name=self.name,
            numbers=self.numbers[atom_idx],
            positions=self.positions[atom_idx],
            n_atoms=counts.copy(),
            cells=self.cells[index],
            pbc=self.pbc[index],
            targets={k: v[index] for k, v in self.targets.items()},
            target_units=dict(self.target_units),
            ids=self.ids[index],
            default_target=self.default_target,
            synthetic=self.synthetic,
            skipped=list(self.skipped),
        )


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c), vectorised.

    >>> ranges(np.array([10, 3]), np.array([2, 3])).tolist()
    [10, 11, 3, 4, 5]
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    shift = np.asarray(starts, dtype=np.int64) - (ends - counts)
    return np.arange(total, dtype=np.int64) + np.repeat(shift, counts)


def from_atoms_list(
    name: str,
    atoms_list: Sequence,
    targets: dict[str, np.ndarray],
    target_units: dict[str, str],
    ids: Sequence[str],
    default_target: str,
    synthetic: bool = False,
    skipped: list[str] | None = None,
) -> StructureSet:
    """Build a StructureSet from ASE ``Atoms`` objects (any source can use this)."""
    g = len(atoms_list)
    n_atoms = np.array([len(a) for a in atoms_list], dtype=np.int64)
    numbers = (
        np.concatenate([a.get_atomic_numbers() for a in atoms_list]).astype(np.int16)
        if g
        else np.zeros(0, np.int16)
    )
    positions = (
        np.concatenate([a.get_positions() for a in atoms_list]).astype(np.float64)
        if g
        else np.zeros((0, 3))
    )
    cells = np.zeros((g, 3, 3))
    pbc = np.zeros((g, 3), dtype=bool)
    for i, a in enumerate(atoms_list):
        pbc[i] = a.get_pbc()
        if pbc[i].any():
            cells[i] = np.asarray(a.get_cell())
    return StructureSet(
        name=name,
        numbers=numbers,
        positions=positions,
        n_atoms=n_atoms,
        cells=cells,
        pbc=pbc,
        targets={k: np.asarray(v, dtype=np.float64) for k, v in targets.items()},
        target_units=dict(target_units),
        ids=np.asarray(list(ids), dtype=str),
        default_target=default_target,
        synthetic=synthetic,
        skipped=list(skipped or []),
    )
