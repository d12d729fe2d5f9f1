"""Shared fixtures: every test gets its own data cache folder; tiny stores are built in memory."""

from __future__ import annotations

import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the tests' tiny run: every test that trains starts from it and changes only what it tests
TEST_CONFIG = os.path.join(ROOT, "configs", "test.yaml")

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(autouse=True)
def _data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GNN_BATCHING_DATA", str(tmp_path / "data"))


def random_store(rng: np.random.Generator, n_nodes, n_edges, n_species: int = 3):
    """A GraphStore with the given per-graph sizes, random local edges and random targets."""
    from gnn_batching.data.graphs import GraphRecipe
    from gnn_batching.data.store import GraphStore

    n_nodes = np.asarray(n_nodes, dtype=np.int32)
    n_edges = np.asarray(n_edges, dtype=np.int32)
    g = len(n_nodes)
    snd = np.concatenate([rng.integers(0, n, e) for n, e in zip(n_nodes, n_edges)] + [np.zeros(0, int)])
    rcv = np.concatenate([rng.integers(0, n, e) for n, e in zip(n_nodes, n_edges)] + [np.zeros(0, int)])
    e_total = int(n_edges.sum())
    feats = rng.normal(size=(e_total, 4)).astype(np.float32)
    feats[:, 3] = np.linalg.norm(feats[:, :3], axis=1)  # [dx, dy, dz, d] like a real store
    return GraphStore(
        name="random", recipe=GraphRecipe(), n_node=n_nodes, n_edge=n_edges,
        species=rng.integers(0, n_species, int(n_nodes.sum())).astype(np.int32),
        positions=rng.normal(size=(int(n_nodes.sum()), 3)).astype(np.float32),
        senders=snd.astype(np.int16), receivers=rcv.astype(np.int16), edges=feats,
        targets={"y": rng.normal(size=g)}, target_units={"y": "u"},
        ids=np.array([f"g{i}" for i in range(g)]), species_z=np.arange(1, n_species + 1, dtype=np.int32),
        default_target="y",
    )


def method_config(method: str, **kw):
    """``BatchingConfig`` for a method by name, ``autobatch`` in its OWN batches (vmap mode's
    per-graph slots): in ragged mode it runs on ``packed``'s batches, which ``packed`` covers."""
    from gnn_batching.config import BatchingConfig

    if method == "autobatch":
        kw.setdefault("autobatch_mode", "vmap")
    return BatchingConfig(method=method, **kw)
