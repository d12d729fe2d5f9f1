"""Data parallelism: a step over 4 (simulated CPU) devices equals one step on the union of their
batches; every host of a simulated multi-host run batches its own share, every graph once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import method_config, random_store

from gnn_batching.batching import BatchingConfig, make_method
from gnn_batching.batching.loader import Loader
from gnn_batching.batching.shard import Shard

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _four_devices_env() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
@pytest.mark.lowest  # also against the lowest allowed versions (.ci/run)
def test_a_four_device_step_equals_one_step_on_the_union():
    r = subprocess.run([sys.executable, os.path.join(HERE, "parallel_cases.py"), "equivalence"],
                       capture_output=True, text=True, env=_four_devices_env(), cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res) == {"schnet/disjoint-union", "schnet/slots", "mpeu/disjoint-union", "mpeu/slots"}
    for key, v in res.items():
        one, four, one2, four2 = v["loss"]
        assert four == pytest.approx(one, rel=2e-5), key
        assert four2 == pytest.approx(one2, rel=2e-5), key  # the second step starts from the combined update
        assert v["moved"] > 1e-3, key  # the parameters did move, so equal parameters mean something
        assert v["params_rel"] < 1e-5, (key, v)
        e1, e4 = v["eval"]
        assert e4["n"] == e1["n"] == 9 and e4["sse"] == pytest.approx(e1["sse"], rel=1e-4), key
        assert "data" in v["sharded"], v["sharded"]  # the batch really was split over the mesh


def _loaders(method, store, index, hosts, n_local, shuffle):
    return [Loader(store, store.targets["y"], index, method, shuffle=shuffle, seed=3,
                   shard=Shard(n_local, h, hosts)) for h in range(hosts)]


@pytest.mark.parametrize("name", ["static-pow2", "static-64", "dynamic", "buckets", "packed", "autobatch"])
@pytest.mark.parametrize("hosts,n_local", [(1, 4), (2, 2), (3, 1), (2, 3)])
def test_hosts_batch_their_own_share_every_graph_once(name, hosts, n_local):
    rng = np.random.default_rng(1)
    n = rng.integers(1, 20, 150)
    e = rng.integers(0, 60, 150)
    store = random_store(rng, n, e)
    index = rng.permutation(150)[:131]
    method = make_method(method_config(name, batch_size=8, buckets=3), store, index)
    for shuffle in (True, False):
        loaders = _loaders(method, store, index, hosts, n_local, shuffle)
        for epoch in (0, 1):
            steps = [list(ld.epoch(epoch)) for ld in loaders]
            assert len({len(s) for s in steps}) == 1  # every host takes part in every step
            seen = np.concatenate([b.index for s in steps for b in s])
            assert sorted(seen.tolist()) == sorted(index.tolist())  # every graph once, over all hosts
            for step in zip(*steps):  # one SPMD program per step: every device batch has one shape
                shapes = {tuple(x.shape) for b in step for x in _leaves(b.arrays)}
                per_host = [b.arrays for b in step]
                assert all(_leaves(a)[0].shape[0] == n_local for a in per_host)
                assert len({tuple(tuple(x.shape) for x in _leaves(a)) for a in per_host}) == 1, shapes
            if name == "buckets":  # the shared shape of a step stays on the menu (compiled ahead)
                menu = {tuple(s) for s in method.compile_ahead()}
                for s in steps[0]:
                    g = s.arrays.graph
                    assert (g.nodes.shape[1], g.edges.shape[1], g.n_node.shape[1]) in menu
            st = loaders[0].epoch_stats[-1]
            assert st["batches"] % (hosts * n_local) == 0 and st["graphs"] == len(index)


def _leaves(tree):
    if tree is None:
        return []
    if isinstance(tree, tuple):
        return [x for t in tree for x in _leaves(t)]
    return [tree]


def test_more_devices_than_the_host_has_is_a_config_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", os.path.join(ROOT, "configs", "smoke.yaml"),
                        "--set", "train.devices=8", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, env=_four_devices_env(), cwd=tmp_path)
    assert r.returncode != 0 and "train.devices: 8 asked, this host has 4 cpu device(s)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "r").exists()


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_a_four_device_run_end_to_end(tmp_path):
    """The run loop on 4 devices: summary says so, evaluation covers every graph once, the
    ahead-of-time compiled shapes are the only compiles, fill is over all devices."""
    out = tmp_path / "r"
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", os.path.join(ROOT, "configs", "smoke.yaml"),
                        "--set", "train.devices=all", "--set", "batching.method=packed", "--set",
                        "train.num_train_steps=6", "--set", "train.eval_every=3", "--out", str(out)],
                       capture_output=True, text=True, env=_four_devices_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_devices"] == 4 and s["n_local_devices"] == 4 and s["n_processes"] == 1
    assert s["test_graphs"] == 30 and s["val_graphs"] == 30  # 300 graphs, 10 % each
    assert s["train_step_compiles"] == 1 and s["compiles_in_timed_window"] == 0 and s["train_compiles_ahead"] == 1
    import pandas as pd

    steps = pd.read_csv(out / "steps.csv")
    # four devices' worth of graphs per step; the epoch's last step holds what is left (its other
    # devices get empty batches), so the first epoch is exactly the 240 training graphs
    assert steps["real_graphs"].iloc[0] > 4 * 10
    first_epoch = steps["real_graphs"].cumsum()
    assert 240 in first_epoch.tolist()
    assert s["graphs_per_s_per_device"] == pytest.approx(s["graphs_per_s"] / 4)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~50 s per method: three training processes; the simulated-hosts tests run by default
@pytest.mark.parametrize("method", ["static-pow2", "buckets", "packed"])
def test_two_hosts_train_exactly_like_one_host_with_as_many_devices(tmp_path, method):
    """A real multi-host run on this machine: 2 processes x 2 CPU devices joined through
    jax.distributed (localhost coordinator) give the same losses and test error as 1 process x 4
    devices, and the same records: graphs seen, fill and throughput count every host's graphs;
    methods compiled ahead of time (buckets, packed) compile their global shapes; process 0 writes
    the run directory, the evaluation covers every graph once."""
    smoke = os.path.join(ROOT, "configs", "smoke.yaml")
    args = ["--set", "train.devices=all", "--set", "train.num_train_steps=6", "--set", "train.eval_every=3",
            "--set", f"batching.method={method}"]
    port = _free_port()
    procs = []
    for i in range(2):
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
                   JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
        procs.append(subprocess.Popen([sys.executable, "-m", "gnn_batching.cli", "run", smoke, "--distributed", *args,
                                       "--out", str(tmp_path / "two")], env=env, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert "process 1: records in" in outs[1][1]
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", smoke, *args, "--out", str(tmp_path / "one")],
                       env=_four_devices_env(), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert (two["n_devices"], two["n_local_devices"], two["n_processes"]) == (4, 2, 2)
    assert (one["n_devices"], one["n_local_devices"], one["n_processes"]) == (4, 4, 1)
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5)
    assert two["test_rmse"] == pytest.approx(one["test_rmse"], rel=1e-5)
    assert two["test_graphs"] == one["test_graphs"] == 30
    for key in ("graphs_seen", "epochs", "node_fill", "edge_fill", "graph_fill", "real_graphs_per_batch_mean",
                "train_compiles_ahead", "train_step_compiles"):
        assert two[key] == pytest.approx(one[key]), key
    assert two["graphs_per_s_per_device"] == pytest.approx(two["graphs_per_s"] / 4)


def test_threaded_assembly_gives_the_same_batches_and_the_bench_reports_it(tmp_path):
    rng = np.random.default_rng(2)
    store = random_store(rng, rng.integers(1, 20, 80), rng.integers(0, 60, 80))
    method = make_method(BatchingConfig(method="static-pow2", batch_size=6), store, np.arange(80))
    ld = Loader(store, store.targets["y"], np.arange(80), method, shuffle=True, shard=Shard(4))
    ld.parallel_min_edges = 10**9
    seq = list(ld.epoch(1))
    ld.parallel_min_edges = 0  # every step's batches in threads
    par = list(ld.epoch(1))
    assert len(seq) == len(par) and ld._pool is not None
    for a, b in zip(seq, par):
        assert (a.index == b.index).all() and a.shape == b.shape
        assert all((x == y).all() for x, y in zip(_leaves(a.arrays.graph), _leaves(b.arrays.graph)))
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "bench", "batching", "--dataset", "aflow-synthetic",
                        "--limit", "60", "--devices", "2", "--batch-sizes", "8", "--methods", "dynamic", "--json"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(r.stdout)[0]
    assert row["devices"] == 2 and row["steps"] >= 1 and row["sequential_ms_per_step"] > 0
    # the ratio is of the figures printed (rounded to 2 decimals)
    assert row["ratio"] == pytest.approx(row["sequential_ms_per_step"] / row["threaded_ms_per_step"], abs=0.006)
    assert row["default_ratio"] == pytest.approx(row["sequential_ms_per_step"] / row["default_ms_per_step"], abs=0.006)


@pytest.mark.parametrize("name", ["static-pow2", "dynamic", "buckets", "autobatch"])
@pytest.mark.parametrize("hosts,n_local", [(1, 2), (2, 2), (3, 1)])
def test_a_resumed_sharded_stream_continues_with_exactly_the_next_step(name, hosts, n_local):
    """``forever(start)`` on every host yields what an uninterrupted stream yields from step
    ``start`` on: a host skips ``start`` STEPS, i.e. ``start * n_local`` of its device batches."""
    import itertools

    rng = np.random.default_rng(2)
    store = random_store(rng, rng.integers(1, 20, 90), rng.integers(0, 60, 90))
    index = rng.permutation(90)[:80]
    method = make_method(method_config(name, batch_size=8, buckets=3), store, index)
    for ld_a, ld_b in zip(_loaders(method, store, index, hosts, n_local, True),
                          _loaders(method, store, index, hosts, n_local, True)):
        straight = list(itertools.islice(ld_a.forever(0), 3, 9))
        resumed = list(itertools.islice(ld_b.forever(3), 6))
        for a, b in zip(straight, resumed):
            assert a.index.tolist() == b.index.tolist()
            for x, y in zip(_leaves(a.arrays), _leaves(b.arrays)):
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("hosts,n_local", [(2, 1), (2, 2), (3, 1)])
def test_every_host_records_the_whole_step(hosts, n_local):
    """On several hosts each one holds its share of a step, but its records count the whole step
    (real graphs, nodes, edges and padded sizes over every host's devices)."""
    rng = np.random.default_rng(4)
    store = random_store(rng, rng.integers(1, 20, 120), rng.integers(0, 60, 120))
    index = np.arange(120)
    method = make_method(BatchingConfig(method="dynamic", batch_size=8), store, index)
    steps = [list(ld.epoch(0)) for ld in _loaders(method, store, index, hosts, n_local, True)]
    for step in zip(*steps):
        own = [{"real_graphs": b.n_real_graphs, "real_nodes": b.n_real_nodes, "real_edges": b.n_real_edges,
                **dict(zip(("n_node", "n_edge", "n_graph"), b.shape))} for b in step]
        whole = {k: sum(o[k] for o in own) for k in own[0]}
        for b in step:
            assert b.totals() == whole
    assert sum(b.totals()["real_graphs"] for b in steps[0]) == len(index)  # one host counts every graph


def test_ahead_of_time_shapes_span_every_host_device():
    """A host's example batch stacks its own devices; the abstract batch compiled ahead of time
    must span the whole mesh (every host's devices), as the step's global arrays do."""
    r = subprocess.run([sys.executable, os.path.join(HERE, "parallel_cases.py"), "abstract"],
                       capture_output=True, text=True, env=_four_devices_env())
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["leading"] == [4] and out["rows"] == [[4, 16]]
