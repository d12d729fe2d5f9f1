"""Graph builders, hand-checked: fully connected, radius (with images), periodic kNN."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from gnn_batching.data import graphs
from gnn_batching.data.graphs import GraphRecipe, build_edges, knn_edges
from gnn_batching.data.structures import from_atoms_list
from gnn_batching.errors import ConfigError


@pytest.fixture(params=graphs.NEIGHBOUR_BACKENDS, autouse=True)
def backend(request, monkeypatch):
    """Every hand-checked case runs with each neighbour-list library."""
    monkeypatch.setattr(graphs, "default_backend", lambda: request.param)
    return request.param


def _set(atoms_list):
    return from_atoms_list("t", atoms_list, {"y": np.zeros(len(atoms_list))}, {"y": ""},
                           [str(i) for i in range(len(atoms_list))], "y")


def test_fully_connected_water_by_hand():
    water = Atoms("OH2", positions=[[0, 0, 0], [1, 0, 0], [0, 2, 0]])
    e = build_edges(_set([water, Atoms("H", positions=[[0, 0, 0]])]), GraphRecipe("fully-connected"))
    assert e.n_edge.tolist() == [6, 0]  # single atom: zero edges, still a valid graph
    pairs = list(zip(e.senders.tolist(), e.receivers.tolist()))
    assert pairs == [(1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2)]  # sender j -> receiver i
    # vector = r_sender - r_receiver
    np.testing.assert_allclose(e.vectors[0], [1, 0, 0])
    np.testing.assert_allclose(e.vectors[3], [-1, 2, 0])


def test_radius_molecule_and_isolated_atom():
    mol = Atoms("H3", positions=[[0, 0, 0], [1.0, 0, 0], [10.0, 0, 0]])
    e = build_edges(_set([mol]), GraphRecipe("radius", cutoff=1.5))
    assert e.n_edge.tolist() == [2]  # atom 2 is isolated beyond the cutoff
    assert sorted(zip(e.senders.tolist(), e.receivers.tolist())) == [(0, 1), (1, 0)]


def test_radius_periodic_counts_images():
    # simple cubic, a = 2: six neighbours at distance 2 within cutoff 2.1 (all images of itself)
    sc = Atoms("H", positions=[[0, 0, 0]], cell=[2, 2, 2], pbc=True)
    e = build_edges(_set([sc]), GraphRecipe("radius", cutoff=2.1))
    assert e.n_edge.tolist() == [6]
    np.testing.assert_allclose(np.linalg.norm(e.vectors, axis=1), 2.0, rtol=1e-6)


def _knn_dists(atoms, k=12):
    s, r, v = knn_edges(atoms, k)
    d = np.linalg.norm(v, axis=1)
    return s, r, d


def test_knn_silicon_known_values():
    si = Atoms("Si2", cell=[3.8669, 3.8669, 3.8669, 60, 60, 60], pbc=True)
    si.set_scaled_positions([[0, 0, 0], [0.25, 0.25, 0.25]])
    assert si.cell.volume == pytest.approx(40.886, abs=1e-3)
    _s, r, d = _knn_dists(si)
    assert np.bincount(r).tolist() == [12, 12]
    for atom in (0, 1):
        da = np.sort(d[r == atom])
        np.testing.assert_allclose(da[:4], 2.368, atol=1e-3)
        assert da[11] == pytest.approx(3.8669, abs=1e-3)


def test_knn_nacl_and_rutile_known_values():
    nacl = Atoms("NaCl", cell=[3.99, 3.99, 3.99, 60, 60, 60], pbc=True)
    nacl.set_scaled_positions([[0, 0, 0], [0.5, 0.5, 0.5]])
    assert nacl.cell.volume == pytest.approx(44.916, abs=1e-3)
    _, r, d = _knn_dists(nacl)
    da = np.sort(d[r == 0])
    np.testing.assert_allclose(da[:6], 2.8214, atol=1e-3)
    assert da[11] == pytest.approx(3.99, abs=1e-3)
    rut = Atoms("O4Ti2", cell=[4.65, 4.65, 2.97, 90, 90, 90], pbc=True)
    rut.set_scaled_positions([[.305, .305, 0], [.695, .695, 0], [.805, .195, .5], [.195, .805, .5],
                              [0, 0, 0], [.5, .5, .5]])
    assert rut.cell.volume == pytest.approx(64.219, abs=1e-3)
    s, r, d = _knn_dists(rut)
    ti = r >= 4
    ti_o = ti & (s < 4)
    assert d[ti_o].min() == pytest.approx(1.962, abs=2e-3)
    assert np.sort(d[r == 0])[11] == pytest.approx(2.8058, abs=2e-3)  # an O atom's 12th neighbour
    np.testing.assert_allclose(np.sort(d[r == 4])[:4], 1.962, atol=2e-3)  # Ti: four O at 1.962 A


def test_knn_single_atom_cell_and_determinism():
    cu = bulk("Cu", "fcc", a=3.6)
    s, r, _d = _knn_dists(cu)
    assert len(s) == 12 and (s == 0).all() and (r == 0).all()  # 12 edges to its own images
    a = knn_edges(cu, 12)
    b = knn_edges(cu.copy(), 12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # ties broken the same way every time


def test_knn_small_molecule_uses_all_others():
    mol = Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    e = build_edges(_set([mol]), GraphRecipe("knn", k=12))
    assert e.n_edge.tolist() == [6]


def test_bad_recipe():
    with pytest.raises(ConfigError, match="graph 'star' unknown"):
        GraphRecipe("star")

