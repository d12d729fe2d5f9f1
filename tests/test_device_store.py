"""The store on the device (``dataset.placement: device``): every padded batch gathered there from
graph indices is bit for bit the host path's, and a run that uses it learns exactly what a host
run learns."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import method_config, random_store

from gnn_batching.batching import make_method
from gnn_batching.batching.registry import registered_methods
from gnn_batching.train.device_store import DeviceStore, choose_placement, store_bytes

UNION = [m for m, cls in registered_methods().items() if cls.layout == "disjoint-union"]
# slots: hub padding only. Three cases in the fast selection (one per kind of gather), the rest slow
FAST = {("static-pow2", "hub"), ("dynamic", "spread"), ("autobatch", "hub")}
CASES = [pytest.param(m, p, marks=() if (m, p) in FAST else pytest.mark.slow)
         for m, p in [(m, p) for m in UNION for p in ("hub", "spread")] + [("autobatch", "hub")]]


@pytest.mark.parametrize("method, pad_edges", CASES)
def test_device_batches_are_the_host_batches_bit_for_bit(method, pad_edges):
    rng = np.random.default_rng(3)
    n_node = rng.integers(1, 12, 150)
    n_node[7] = 1  # a single atom: no edges
    n_edge = np.where(n_node > 1, rng.integers(0, 40, 150), 0)
    store = random_store(rng, n_node, n_edge)
    targets = rng.normal(size=150).astype(np.float32)
    train = np.arange(120)
    m = make_method(method_config(method, batch_size=9), store, train)
    plan = m.plan(np.random.default_rng(0).permutation(train))
    dev = DeviceStore(store, targets, pad_edges)
    host = list(m.iterate(store, plan, targets, pad_edges))
    gathered = list(dev.assembler(m)(store, plan))
    assert len(host) == len(gathered) == len(plan)
    for h, d in zip(host, gathered):
        assert (h.n_real_graphs, h.n_real_nodes, h.n_real_edges) == (d.n_real_graphs, d.n_real_nodes, d.n_real_edges)
        assert h.index.tolist() == d.index.tolist() and h.shape == d.shape
        for x, y in zip(jax.tree_util.tree_leaves(h.arrays), jax.tree_util.tree_leaves(d.arrays)):
            y = np.asarray(y)
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
    assert dev.nbytes == store_bytes(store)


def test_placement_auto_chooses_the_device_only_where_it_pays_and_fits():
    mib = 2**20
    assert choose_placement("auto", 100 * mib, 1, 0.25, backend="cpu")[0] == "host"
    assert choose_placement("auto", 100 * mib, 1, 0.25, "gpu", 1000 * mib)[0] == "device"
    where, why = choose_placement("auto", 300 * mib, 1, 0.25, "gpu", 1000 * mib)
    assert where == "host" and "exceeds 25%" in why
    assert choose_placement("device", 1, 4, 0.25, "gpu", 10**12)[0] == "host"
    assert choose_placement("device", 1, 1, 0.25, "cpu") == ("device", "dataset.placement: device")


@pytest.mark.slow  # six runs; the gather itself is checked bit for bit in the fast selection
@pytest.mark.parametrize("method", ["static-64", "buckets", "autobatch"])
def test_a_device_placed_run_learns_what_a_host_run_learns(tmp_path, method):
    """The same batches, losses and parameters, evaluation included; the summary says where."""
    import flax.serialization
    from restart_cases import config

    from gnn_batching.train.run import prepare, train_and_evaluate

    p = prepare(config(method, ["dataset.placement=device"]), verbose=False)
    for loader in (p.train_loader, *p.eval_loaders.values()):  # every split is gathered on the device
        leaves = jax.tree_util.tree_leaves(next(iter(loader.epoch(0))).arrays)
        assert all(isinstance(x, jax.Array) for x in leaves)
    runs = {}
    for where in ("host", "device"):
        runs[where] = train_and_evaluate(config(method, [f"dataset.placement={where}"]), str(tmp_path / where),
                                         verbose=False)[1]
    assert (runs["device"]["placement"], runs["host"]["placement"]) == ("device", "host")
    assert runs["device"]["device_store_bytes"] > 0 == runs["host"]["device_store_bytes"]
    a, b = (pd.read_csv(tmp_path / w / "steps.csv") for w in ("host", "device"))
    for col in ("real_graphs", "real_nodes", "real_edges", "n_node", "n_edge", "n_graph", "loss"):
        assert a[col].tolist() == b[col].tolist(), col
    ea, eb = (pd.read_csv(tmp_path / w / "evals.csv") for w in ("host", "device"))
    assert ea[["rmse", "mae", "graphs"]].values.tolist() == eb[["rmse", "mae", "graphs"]].values.tolist()
    params = [flax.serialization.msgpack_restore((tmp_path / w / "params.msgpack").read_bytes())
              for w in ("host", "device")]
    for x, y in zip(jax.tree_util.tree_leaves(params[0]), jax.tree_util.tree_leaves(params[1])):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # two runs and a resumed one
def test_a_run_killed_on_the_host_path_resumes_on_the_device_to_the_uninterrupted_records(tmp_path):
    """dataset.placement may change on --resume (a run continued on a machine where the store fits,
    or does not): the batches are bit-identical, so the records equal an uninterrupted run's."""
    from restart_cases import config, killed_run
    from test_restart import check_resumed_equals_straight

    from gnn_batching.train.run import train_and_evaluate

    device = config("static-64", ["dataset.placement=device"])
    s = train_and_evaluate(device, str(tmp_path / "straight"), verbose=False)[1]
    killed_run(config("static-64", ["dataset.placement=host"]), str(tmp_path / "resumed"), 14)
    written = (tmp_path / "resumed" / "steps.csv").read_bytes().splitlines(keepends=True)
    r = train_and_evaluate(device, str(tmp_path / "resumed"), verbose=False, resume=True)[1]
    check_resumed_equals_straight(str(tmp_path), s, r)
    # the rows up to the checkpoint (header + steps 0-11), written on the host path, kept byte for byte
    assert (tmp_path / "resumed" / "steps.csv").read_bytes().splitlines(keepends=True)[:13] == written[:13]
    assert pd.read_csv(tmp_path / "resumed" / "steps.csv")["loss"].tolist() == \
        pd.read_csv(tmp_path / "straight" / "steps.csv")["loss"].tolist()  # exact, not just close
    assert r["placement"] == s["placement"] == "device"


@pytest.mark.slow  # end to end: run by .ci/run and `pytest -m slow`
def test_bench_pipeline_times_both_paths_on_the_same_batches(capsys):
    import json

    from gnn_batching.bench.pipeline import format_pipeline
    from gnn_batching.cli import main

    assert main(["bench", "pipeline", "--dataset", "aflow-synthetic", "--limit", "60", "--batch-sizes", "6",
                 "--methods", "static-pow2", "autobatch", "--steps", "4", "--block", "2", "--steps-per-call", "2",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["static-pow2", "autobatch"]  # one GraphsTuple a step: ragged autobatch
    r = rows[0]
    assert r["device_speedup"] == pytest.approx(r["host_ms"] / r["device_ms"])
    assert r["host_overhead_fraction"] == pytest.approx(1 - r["device_only_ms"] / r["host_ms"])
    assert r["device_store_bytes"] > 0 and r["steps"] == 4
    assert r["k"] == 2 and r["k_speedup"] == pytest.approx(r["device_ms"] / r["device_k_ms"])
    assert r["k_over_host"] == pytest.approx(r["host_ms"] / r["device_k_ms"]) and r["blocks"] == 2
    for key in ("device_speedup", "k_speedup", "k_over_host"):  # the block-by-block ratios: lowest, highest
        lo, hi = r[f"{key}_range"]
        assert 0 < lo <= hi
    text = format_pipeline(rows)
    assert "K / host path" in text and f"{r['device_speedup']:.2f}x (" in text
