"""Neighbour lists at library speed: vesin gives exactly ASE's graphs (the documented tie-break
kept), and ``bench graphs`` times both."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gnn_batching.data.graphs import GraphRecipe, build_edges


@pytest.mark.parametrize("recipe", [GraphRecipe("knn", k=12), GraphRecipe("radius", cutoff=4.0)])
def test_vesin_and_ase_give_the_same_graphs_on_500_random_crystals(recipe):
    from gnn_batching.data.synthetic import generate

    s = generate(500, seed=7)
    a = build_edges(s, recipe, backend="vesin")
    b = build_edges(s, recipe, backend="ase")
    assert a.n_edge.sum() > 500 * 12 * 0.9
    np.testing.assert_array_equal(a.n_edge, b.n_edge)
    np.testing.assert_array_equal(a.senders, b.senders)
    np.testing.assert_array_equal(a.receivers, b.receivers)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(a.vectors, axis=1), np.linalg.norm(b.vectors, axis=1), atol=1e-6)


def test_bench_graphs_prints_both_builders_and_their_ratio(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "bench", "graphs", "--dataset", "aflow-synthetic",
                        "-n", "40", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(r.stdout)
    assert row["structures"] == 40 and row["builder"] == "knn" and row["equal"] is True
    assert row["ratio"] == pytest.approx(row["vesin_structures_per_s"] / row["ase_structures_per_s"], rel=0.02)
