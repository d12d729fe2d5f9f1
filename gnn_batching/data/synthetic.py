"""``aflow-synthetic``: seeded AFLOW-like periodic crystals (SYNTHETIC data, not AFLOW).

Atom counts follow a clipped log-normal fitted to the AFLOW ICSD size distribution in the
data notes (median 14, mean ~19, p90 ~38, max 144); cells have 10-25 A^3 per atom; atoms
are at least 1.5 A apart (minimum image). The target ``synthetic_ef`` (eV/atom) is a
learnable function of composition and density plus small noise. Structure ``i`` depends
only on ``(seed, i)``, so any prefix of a larger set is the smaller set.
"""

from __future__ import annotations

import numpy as np

from gnn_batching.data.structures import StructureSet

ELEMENTS = [3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 20, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
            34, 38, 40, 42, 47, 50, 56, 74]  # fmt: skip
MEDIAN_ATOMS, SIGMA, MIN_ATOMS, MAX_ATOMS = 14.0, 0.78, 2, 144
MIN_DIST = 1.5
TARGET = "synthetic_ef"


def _species_energy(z: np.ndarray) -> np.ndarray:
    # smooth, deterministic per-element "energy" in eV, so the target is learnable
    return -1.5 + 1.2 * np.sin(0.37 * z) + 0.01 * z


def _one(seed: int, i: int):
    rng = np.random.default_rng([seed, i])
    n = int(np.clip(round(rng.lognormal(np.log(MEDIAN_ATOMS), SIGMA)), MIN_ATOMS, MAX_ATOMS))
    n_species = int(rng.integers(1, min(4, n) + 1))
    species = rng.choice(ELEMENTS, size=n_species, replace=False)
    numbers = np.concatenate([species, rng.choice(species, size=n - n_species)]).astype(np.int16)
    vol_per_atom = rng.uniform(10.0, 25.0)
    for _ in range(50):  # retry with a new cell if packing fails (very rare at >= 10 A^3/atom)
        angles = rng.uniform(75.0, 105.0, 3)
        ratios = rng.uniform(0.8, 1.25, 3)
        from ase.geometry import cellpar_to_cell

        cell = cellpar_to_cell(np.concatenate([ratios, angles]))
        scale = (n * vol_per_atom / abs(np.linalg.det(cell))) ** (1.0 / 3.0)
        cell = cell * scale
        frac = _pack(rng, cell, n)
        if frac is not None:
            break
    else:  # pragma: no cover - statistically unreachable
        raise RuntimeError(f"aflow-synthetic: could not pack structure {i}")
    pos = frac @ cell
    ef = float(_species_energy(numbers.astype(float)).mean() + 0.3 * (vol_per_atom - 17.5) / 7.5)
    ef += float(rng.normal(0.0, 0.02))
    return numbers, pos, cell, ef


def _pack(rng, cell: np.ndarray, n: int) -> np.ndarray | None:
    frac = np.zeros((n, 3))
    placed = 0
    tries = 0
    while placed < n:
        cand = rng.random((64, 3))
        for c in cand:
            if placed:
                d = c - frac[:placed]
                d -= np.round(d)
                if (np.linalg.norm(d @ cell, axis=1) < MIN_DIST).any():
                    continue
            frac[placed] = c
            placed += 1
            if placed == n:
                break
        tries += 1
        if tries > 200:
            return None
    return frac


def generate(n: int = 10_000, seed: int = 0, progress=None) -> StructureSet:
    """``n`` synthetic AFLOW-like crystals."""
    numbers, positions, cells, n_atoms, ef = [], [], [], [], []
    for i in range(n):
        z, p, c, e = _one(seed, i)
        numbers.append(z)
        positions.append(p)
        cells.append(c)
        n_atoms.append(len(z))
        ef.append(e)
        if progress and (i + 1) % 500 == 0:
            progress(i + 1, n)
    return StructureSet(
        name="aflow-synthetic",
        numbers=np.concatenate(numbers),
        positions=np.concatenate(positions),
        n_atoms=np.array(n_atoms, dtype=np.int64),
        cells=np.array(cells),
        pbc=np.ones((n, 3), dtype=bool),
        targets={TARGET: np.array(ef)},
        target_units={TARGET: "eV/atom (synthetic)"},
        ids=np.array([f"synthetic-{seed}-{i:06d}" for i in range(n)]),
        default_target=TARGET,
        synthetic=True,
    )
