"""Data sources: QM9 CSV and xyz, ASE files, registration hook, synthetic set, store cache, splits."""

from __future__ import annotations

import io
import os
import re
import tarfile

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from gnn_batching import register_dataset
from gnn_batching.data import DatasetSpec, load_dataset
from gnn_batching.data.datasets import cache_key, load_store
from gnn_batching.data.qm9 import load_qm9_xyz, load_qm9pack, qm9pack_files
from gnn_batching.data.store import GraphStore, make_splits
from gnn_batching.data.synthetic import generate
from gnn_batching.errors import BadEntryError, ConfigError, DataError


@pytest.fixture
def qm9_csv(tmp_path):
    """The first 30 molecules of qm9pack, one with the tolerant '0.' number format."""
    with open(qm9pack_files()[0], encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(31)]
    path = tmp_path / "qm9_small.csv"
    path.write_text("".join(lines))
    return path, lines


def test_qm9_csv_atomization_and_targets(qm9_csv):
    path, _ = qm9_csv
    s = load_qm9pack([str(path)])
    assert len(s) == 30 and s.ids[0] == "dsgdb9nsd_000001"
    assert s.targets["U0_atomization"][0] == pytest.approx(-17.17, abs=0.01)  # CH4
    assert s.target_units["U0_atomization"] == "eV" and s.target_units["mu"] == "D"
    assert s.n_atoms[0] == 5 and s.numbers[:5].tolist() == [6, 1, 1, 1, 1]
    assert s.targets["homo"][0] == pytest.approx(-0.3877 * 27.211386)


def test_qm9_malformed_row_named_and_skippable(qm9_csv, tmp_path):
    _path, lines = qm9_csv
    bad = lines[:3] + [lines[3].replace("[[", "[[nan_is_not_a_number,", 1)] + lines[4:]
    p2 = tmp_path / "bad.csv"
    p2.write_text("".join(bad))
    with pytest.raises(BadEntryError, match=r"bad.csv row 4 \(dsgdb9nsd_000003.xyz\): malformed entry"):
        load_qm9pack([str(p2)])
    s = load_qm9pack([str(p2)], skip_bad=True)
    assert len(s) == 29 and len(s.skipped) == 1 and "row 4" in s.skipped[0]


def test_qm9_skip_bad_skips_nan_coordinates_and_unknown_elements(qm9_csv, tmp_path):
    _path, lines = qm9_csv
    coords_at = lines[3].index("[[")
    nan_row = lines[3][:coords_at] + "[[nan" + lines[3][lines[3].index(",", coords_at):]
    unknown = lines[5].replace("'C'", "'Xx'", 1)
    assert unknown != lines[5] and nan_row != lines[3]
    p2 = tmp_path / "bad.csv"
    p2.write_text("".join(lines[:3] + [nan_row, lines[4], unknown] + lines[6:]))
    with pytest.raises(BadEntryError, match=r"bad.csv row 4 \(dsgdb9nsd_000003.xyz\): NaN or infinite coordinate"):
        load_qm9pack([str(p2)])
    s = load_qm9pack([str(p2)], skip_bad=True)
    assert len(s) == 28 and len(s.skipped) == 2
    assert "row 4" in s.skipped[0] and "row 6" in s.skipped[1] and "unknown element 'Xx'" in s.skipped[1]
    assert "dsgdb9nsd_000003" not in s.ids and "dsgdb9nsd_000005" not in s.ids
    assert np.isfinite(s.positions).all() and s.n_atoms.sum() == len(s.numbers) == len(s.positions)
    s.validate()


XYZ = """5
gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\t
C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689
H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 9.063972942*^-1\t 0.133923
1341.307\t1341.3284
C\tC
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""


def test_qm9_xyz_tarball_with_mathematica_exponent(tmp_path):
    tar_path = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(tar_path, "w:bz2") as tar:
        for i in (1, 2):
            data = XYZ.replace("gdb 1", f"gdb {i}").encode()
            info = tarfile.TarInfo(f"dsgdb9nsd_{i:06d}.xyz")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s = load_qm9_xyz(str(tar_path))
    assert len(s) == 2 and s.ids.tolist() == ["dsgdb9nsd_000001", "dsgdb9nsd_000002"]
    assert s.positions[4, 2] == pytest.approx(0.9063972942)
    assert s.targets["U0_atomization"][0] == pytest.approx(-17.17, abs=0.01)
    assert s.targets["cv"][0] == pytest.approx(6.469)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "dsgdb9nsd_000001.xyz").write_text(XYZ.replace("C\t-0.01", "Xx\t-0.01"))
    with pytest.raises(BadEntryError, match=r"dsgdb9nsd_000001.xyz: malformed QM9 xyz entry: unknown element 'Xx'"):
        load_qm9_xyz(str(tmp_path / "dir"))


def _write_extxyz(path, n=12, with_bad=None, mixed=False):
    frames = []
    rng = np.random.default_rng(0)
    for i in range(n):
        a = Atoms("CH4" if i % 2 else "NaCl", positions=rng.normal(size=(5 if i % 2 else 2, 3)) * 2)
        if mixed and i % 3 == 0:  # a few crystals among molecules
            a.set_cell([5, 5, 5])
            a.pbc = True
        a.info["energy"] = float(i)
        frames.append(a)
    if with_bad == "nan":
        frames[3].positions[0, 0] = np.nan
    if with_bad == "target":
        del frames[4].info["energy"]
        frames[5].info["energy"] = 1.0
    write(path, frames, format="extxyz")


def test_file_dataset_extxyz_species_from_data(tmp_path):
    p = tmp_path / "mols.extxyz"
    _write_extxyz(p, mixed=True)
    with pytest.raises(DataError, match=r"4 of 12 structures are periodic \(e\.g\. mols\.extxyz:0\), the others not "
                                         r"\(e\.g\. mols\.extxyz:1\); choose the graph with dataset\.graph"):
        load_dataset(DatasetSpec(name=f"file:{p}"))  # a mix of molecules and crystals: the user chooses
    ds = load_dataset(DatasetSpec(name=f"file:{p}", split=(0.5, 0.25, 0.25), graph="fully-connected"))
    assert len(ds.store) == 12 and ds.target == "energy"
    assert ds.store.species_z.tolist() == [1, 6, 11, 17]  # not QM9's five
    assert ds.store.n_edge[0] == 2  # NaCl fully connected
    periodic_entries = load_dataset(DatasetSpec(name=f"file:{p}", graph="radius", cutoff=3.0))
    assert len(periodic_entries.store) == 12


def test_file_dataset_bad_entries(tmp_path):
    p = tmp_path / "bad.extxyz"
    _write_extxyz(p, with_bad="target")
    where = "bad.extxyz: structure 5 (counting from 1; id bad.extxyz:4)"
    # the error names the entry, the skip option and what skipping counts
    with pytest.raises(BadEntryError, match=re.escape(f"{where}: missing target 'energy'; to leave such entries out "
                                                      "instead, set dataset.skip_bad: true (--set dataset.skip_bad="
                                                      "true; --skip-bad for `data stats` and `advise`): each skipped "
                                                      "entry is named, left out of every split and counted")):
        load_dataset(DatasetSpec(name=f"file:{p}", target="energy"))
    ds = load_dataset(DatasetSpec(name=f"file:{p}", target="energy", skip_bad=True, graph="radius"))
    assert len(ds.store) == 11 and ds.store.skipped == [f"{where}: missing target 'energy'"]
    _write_extxyz(p, with_bad="nan")
    with pytest.raises(BadEntryError, match=r"structure 4 \(counting from 1; id bad.extxyz:3\): NaN or infinite"):
        load_dataset(DatasetSpec(name=f"file:{p}", target="energy"))
    text = (tmp_path / "m.xyz")
    text.write_text("1\nenergy=abc\nH 0 0 0\n1\nenergy=1.5\nH 0 0 0\n")
    with pytest.raises(DataError, match=r"structure 1 .*: target 'energy' is not a number \('abc'\)"):
        load_dataset(DatasetSpec(name=f"file:{text}", target="energy"))
    text.write_text("1\nenergy=1.0\nH 0 0 0\n1\nenergy=1.5\nXx 0 0 0\n")
    with pytest.raises(DataError, match=r"m\.xyz: ASE cannot read structure 2 \(counting from 1\)"):
        load_dataset(DatasetSpec(name=f"file:{text}", target="energy"))
    with pytest.raises(DataError, match="no file matches"):
        load_dataset(DatasetSpec(name=f"file:{tmp_path}/*.nothing"))
    (tmp_path / "junk.extxyz").write_text("this is not\nan xyz file\n")
    with pytest.raises(DataError, match=r"junk\.extxyz: ASE cannot read"):
        load_dataset(DatasetSpec(name=f"file:{tmp_path / 'junk.extxyz'}"))


def test_a_crystal_file_gets_periodic_graphs_by_default(tmp_path):
    """pbc=True structures are crystals: periodic kNN graphs by default (a 1-atom crystal has
    neighbours: its own images), not fully connected molecules."""
    p = tmp_path / "crystals.extxyz"
    frames = []
    for i in range(8):
        a = Atoms("Cu", positions=[[0, 0, 0]], cell=[2.5 + 0.1 * i] * 3, pbc=True) if i % 2 else \
            Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]], cell=[5.6, 5.6, 5.6], pbc=True)
        a.info["energy"] = float(i)
        frames.append(a)
    write(p, frames, format="extxyz")
    ds = load_dataset(DatasetSpec(name=f"file:{p}"))
    assert ds.store.recipe.kind == "knn"
    assert ds.store.n_edge[1] == 12  # the 1-atom crystal: 12 neighbours among its images
    fc = load_dataset(DatasetSpec(name=f"file:{p}", graph="fully-connected"))
    assert fc.store.n_edge[1] == 0


def test_file_dataset_side_csv(tmp_path):
    p = tmp_path / "m.extxyz"
    _write_extxyz(p, n=6)
    csv = tmp_path / "t.csv"
    csv.write_text("index,gap\n" + "\n".join(f"{i},{i * 0.5}" for i in range(6)) + "\n")
    ds = load_dataset(DatasetSpec(name=f"file:{p}", targets_csv=str(csv), target="gap"))
    assert ds.store.targets["gap"].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_registered_python_dataset(tmp_path):
    @register_dataset("test-g2", description="ASE's g2 molecules, target = number of atoms")
    def g2(limit=None, seed=0, **options):
        from ase.collections import g2 as coll

        out = []
        for a in coll:
            a = a.copy()
            a.info = {"n": float(len(a))}
            out.append(a)
        return out

    ds = load_dataset(DatasetSpec(name="test-g2", limit=50))
    assert len(ds.store) == 50 and ds.target == "n"
    assert set(ds.store.targets["n"].tolist()) <= set(range(1, 20))
    from gnn_batching.data.datasets import dataset_names

    assert "test-g2" in dataset_names()
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'.*@register_dataset in a file named by --module"):
        load_dataset(DatasetSpec(name="nope"))


def test_a_registered_loader_that_returns_no_atoms_is_named():
    """A loader returning anything but ase.Atoms gets a DataError naming the dataset and the
    entry (a newcomer's loader returning [1, 2, 3] crashed in atoms.info)."""

    @register_dataset("test-not-atoms")
    def not_atoms(limit=None, seed=0, **_):
        return [Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], info={"y": 1.0}), 2, 3]

    @register_dataset("test-not-a-list")
    def not_a_list(limit=None, seed=0, **_):
        return 7

    with pytest.raises(DataError, match="dataset 'test-not-atoms': entry 1 is int, not ase.Atoms"):
        load_dataset(DatasetSpec(name="test-not-atoms"), use_cache=False)
    with pytest.raises(DataError, match="dataset 'test-not-a-list': its loader returned int, not a list"):
        load_dataset(DatasetSpec(name="test-not-a-list"), use_cache=False)


def test_synthetic_is_seeded_prefix_stable_and_labelled():
    a = generate(40)
    b = generate(60)
    np.testing.assert_array_equal(a.numbers, b.numbers[: len(a.numbers)])
    assert a.synthetic and a.name == "aflow-synthetic" and "synthetic" in a.target_units["synthetic_ef"]
    assert a.pbc.all() and a.n_atoms.min() >= 2
    # minimum image distance >= 1.5 A
    from gnn_batching.data.graphs import GraphRecipe, build_edges

    e = build_edges(a, GraphRecipe("knn", k=1))
    assert np.linalg.norm(e.vectors, axis=1).min() >= 1.5 - 1e-6


def test_store_cache_roundtrip_and_invalidation(tmp_path):
    p = tmp_path / "m.extxyz"
    _write_extxyz(p, n=8)
    spec = DatasetSpec(name=f"file:{p}")
    s1 = load_store(spec, verbose=False)
    key1 = cache_key(spec)
    root = os.environ["GNN_BATCHING_DATA"]
    assert os.path.exists(os.path.join(root, "cache", key1, "meta.json"))
    s2 = GraphStore.load(os.path.join(root, "cache", key1))
    np.testing.assert_array_equal(s1.edges, s2.edges)
    np.testing.assert_array_equal(s1.senders, s2.senders)
    assert cache_key(DatasetSpec(name=f"file:{p}", graph="radius")) != key1  # recipe changes the key
    _write_extxyz(p, n=9)
    os.utime(p, (1, 1))
    assert cache_key(spec) != key1  # source change invalidates
    assert len(load_store(spec, verbose=False)) == 9


def test_splits_disjoint_seeded_and_stats_from_train():
    sp = make_splits(1000, (0.8, 0.1, 0.1), seed=3)
    allidx = np.concatenate([sp.train, sp.val, sp.test])
    assert sorted(allidx.tolist()) == list(range(1000)) and len(sp.train) == 800
    assert make_splits(1000, (0.8, 0.1, 0.1), 3).train.tolist() == sp.train.tolist()
    assert make_splits(1000, (0.8, 0.1, 0.1), 4).train.tolist() != sp.train.tolist()
    fixed = make_splits(1000, (600, 100, -1), 0)
    assert (len(fixed.train), len(fixed.val), len(fixed.test)) == (600, 100, 300)
    with pytest.raises(ConfigError, match="sum to 1"):
        make_splits(10, (0.5, 0.1, 0.1), 0)


def test_limit_is_a_seeded_random_subset(tmp_path):
    p = tmp_path / "m.extxyz"
    _write_extxyz(p, n=12)
    ds = load_dataset(DatasetSpec(name=f"file:{p}", limit=5))
    assert len(ds.store) == 5
    assert load_dataset(DatasetSpec(name=f"file:{p}", limit=5)).store.ids.tolist() == ds.store.ids.tolist()


def test_dataset_module_from_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_plugin_mod.py").write_text(
        "from ase import Atoms\n"
        "from gnn_batching import register_dataset\n\n"
        "@register_dataset('plugin-dimers')\n"
        "def dimers(limit=None, seed=0, **options):\n"
        "    out = []\n"
        "    for i in range(20):\n"
        "        a = Atoms('H2', positions=[[0, 0, 0], [0.5 + 0.05 * i, 0, 0]])\n"
        "        a.info['bond'] = 0.5 + 0.05 * i\n"
        "        out.append(a)\n"
        "    return out\n"
    )
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(DatasetSpec(name="plugin-dimers", module="my_plugin_mod"))
    assert len(ds.store) == 20 and ds.target == "bond" and (ds.store.n_edge == 2).all()
    with pytest.raises(ConfigError, match="cannot import 'no_such_mod'"):
        load_dataset(DatasetSpec(name="x", module="no_such_mod"))
