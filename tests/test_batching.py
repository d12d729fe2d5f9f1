"""Batchers: exactly-once per epoch, batch/unbatch round trip, masks, budgets, oversize, prefetch."""

from __future__ import annotations

import threading

import jraph
import numpy as np
import pytest
from conftest import method_config, random_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gnn_batching.batching import Batch, BatchingConfig, GraphBatch, Loader, Prefetcher, assemble, make_method
from gnn_batching.batching.budgets import Budget, budget_from_rule, ceil_multiple, next64_strict, next_pow2
from gnn_batching.batching.methods import greedy_bounds
from gnn_batching.errors import ConfigError, OversizeGraphError
from gnn_batching.plugins import method_names

METHOD_NAMES = method_names()  # every registered method (the package's own)

sizes = st.lists(st.tuples(st.integers(1, 12), st.integers(0, 30)), min_size=1, max_size=60)


def _check_batch(store, batch, shape, pad_edges):
    """The batch holds exactly its graphs' arrays, then correct padding and masks."""
    g = batch.graph
    n_node, n_edge, n_graph = shape
    assert g.nodes.shape == (n_node,) and g.edges.shape == (n_edge, 4) and g.n_node.shape == (n_graph,)
    assert g.n_node.sum() == n_node and g.n_edge.sum() == n_edge
    k = batch.n_real_graphs
    assert batch.graph_mask.tolist() == [True] * k + [False] * (n_graph - k)
    # unbatch the real graphs and compare with the store
    node_off = 0
    edge_off = 0
    for j, i in enumerate(batch.index.tolist()):
        a, b = store.node_offsets[i], store.node_offsets[i + 1]
        c, d = store.edge_offsets[i], store.edge_offsets[i + 1]
        nn, ne = b - a, d - c
        assert g.n_node[j] == nn and g.n_edge[j] == ne
        np.testing.assert_array_equal(g.nodes[node_off : node_off + nn], store.species[a:b])
        np.testing.assert_array_equal(g.edges[edge_off : edge_off + ne], store.edges[c:d])
        np.testing.assert_array_equal(g.senders[edge_off : edge_off + ne] - node_off, store.senders[c:d])
        np.testing.assert_array_equal(g.receivers[edge_off : edge_off + ne] - node_off, store.receivers[c:d])
        assert batch.targets[j] == np.float32(store.targets["y"][i])
        node_off += nn
        edge_off += ne
    assert node_off == batch.n_real_nodes and edge_off == batch.n_real_edges
    # padding: all padding edges stay among the padding nodes; padding values are zero
    pad_s = g.senders[edge_off:]
    assert (pad_s >= node_off).all() and (g.receivers[edge_off:] >= node_off).all()
    if pad_edges == "hub":
        assert (pad_s == node_off).all()
    assert (g.edges[edge_off:] == 0).all() and (batch.targets[k:] == 0).all()
    # jraph's own masks agree with ours
    assert jraph.get_graph_padding_mask(g).tolist() == batch.graph_mask.tolist()
    assert jraph.get_node_padding_mask(g).tolist() == batch.node_mask().tolist()
    assert jraph.get_edge_padding_mask(g).tolist() == batch.edge_mask().tolist()


def _check_slots(store, batch):
    """Each real slot of a slots-layout batch is one graph padded alone (hub padding), as ``_check_batch`` wants."""
    pos = 0
    for bucket in batch.arrays:
        real = int(bucket.mask.sum())
        assert bucket.mask.tolist() == [True] * real + [False] * (len(bucket.mask) - real)
        for j in range(len(bucket.mask)):
            graph = jax_tree_index(bucket.graph, j)
            one = Batch(GraphBatch(graph, np.array([bucket.targets[j], 0], np.float32), np.array([j < real, False])),
                        int(j < real), int(graph.n_node[0]) if j < real else 0,
                        int(graph.n_edge[0]) if j < real else 0, batch.index[pos + j : pos + j + 1] if j < real else
                        batch.index[:0])
            _check_batch(store, one, (graph.nodes.shape[0], graph.edges.shape[0], 2), "hub")
        pos += real
    assert pos == batch.n_real_graphs


def jax_tree_index(graph, j):
    return graph._replace(**{f: getattr(graph, f)[j] for f in ("nodes", "edges", "senders", "receivers", "n_node",
                                                                "n_edge")})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=sizes, bs=st.integers(2, 9), method=st.sampled_from(METHOD_NAMES),
       pad_edges=st.sampled_from(["hub", "spread"]), seed=st.integers(0, 3))
def test_every_graph_exactly_once_and_roundtrip(sizes, bs, method, pad_edges, seed):
    rng = np.random.default_rng(seed)
    store = random_store(rng, [s[0] for s in sizes], [s[1] for s in sizes])
    index = np.arange(len(store))
    cfg = method_config(method, batch_size=bs, pad_edges=pad_edges)
    m = make_method(cfg, store, index)
    loader = Loader(store, store.targets["y"], index, m, shuffle=True, seed=seed, pad_edges=pad_edges)
    for epoch in range(2):
        seen = []
        for batch in loader.epoch(epoch):
            if m.layout == "slots":  # graphs padded one by one: check every real slot on its own
                _check_slots(store, batch)
            else:
                _check_batch(store, batch, batch.shape, pad_edges)
            seen.extend(batch.index.tolist())
            if method.startswith("static"):
                assert batch.n_real_graphs <= bs - 1 and batch.shape[2] == bs
        assert sorted(seen) == index.tolist()
        st_ = loader.epoch_stats[-1]
        assert st_["graphs"] == len(store) and st_["skipped"] == 0
    if method in ("dynamic", "static-max"):
        assert st_["distinct_shapes"] == 1


def test_static_holds_bs_minus_one_and_keeps_final_partial_batch():
    store = random_store(np.random.default_rng(0), [3] * 10, [4] * 10)
    plan = make_method(BatchingConfig(method="static-pow2", batch_size=4), store, np.arange(10)).plan(np.arange(10))
    assert np.diff(plan.bounds).tolist() == [3, 3, 3, 1]  # the study's code dropped graphs here
    # pow2 rounding: 9 nodes + 1 -> 16; 12 edges -> 16; last batch 3+1 -> 4 nodes, 4 edges
    assert plan.shapes.tolist() == [[16, 16, 4]] * 3 + [[4, 4, 4]]


def test_rounding_rules():
    assert next_pow2(np.array([0, 1, 2, 3, 17])).tolist() == [1, 1, 2, 4, 32]
    assert ceil_multiple(np.array([0, 1, 64, 65]), 64).tolist() == [64, 64, 64, 128]
    assert next64_strict(64) == 128 and next64_strict(63.5) == 64


@pytest.mark.parametrize(
    "nodes, edges, expected",
    [
        ([5, 5, 5], [1, 1, 1], [0, 1, 2, 3]),  # node limit (cap 9): one graph per batch... 5+5 > 9
        ([2, 2, 2, 2], [6, 6, 6, 6], [0, 1, 2, 3, 4]),  # edge limit (cap 10)
        ([1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 3, 5]),  # graph limit (cap 3)
        ([4, 5, 1], [5, 5, 0], [0, 2, 3]),  # exactly full then a new batch
    ],
)
def test_greedy_bounds_each_limit(nodes, edges, expected):
    assert greedy_bounds(np.array(nodes), np.array(edges), 9, 10, 3).tolist() == expected


def test_dynamic_matches_jraph_packing_on_a_store():
    rng = np.random.default_rng(1)
    n = rng.integers(1, 20, 300)
    e = rng.integers(0, 60, 300)
    store = random_store(rng, n, e)
    cfg = BatchingConfig(method="dynamic", batch_size=8)
    m = make_method(cfg, store, np.arange(300))
    order = rng.permutation(300)
    plan = m.plan(order)
    graphs = []
    for i in order.tolist():
        a, b = store.node_offsets[i], store.node_offsets[i + 1]
        c, d = store.edge_offsets[i], store.edge_offsets[i + 1]
        graphs.append(jraph.GraphsTuple(nodes=store.species[a:b], edges=store.edges[c:d],
                                        senders=store.senders[c:d].astype(np.int32),
                                        receivers=store.receivers[c:d].astype(np.int32),
                                        n_node=np.array([b - a]), n_edge=np.array([d - c]), globals=None))
    ref = list(jraph.dynamically_batch(iter(graphs), *m.fixed_shape()))
    assert len(ref) == len(plan)
    for b, r in enumerate(ref):
        ours = assemble(store, plan.batch(b), tuple(plan.shapes[b]), store.targets["y"])
        np.testing.assert_array_equal(ours.graph.nodes, r.nodes)
        np.testing.assert_array_equal(ours.graph.edges, r.edges)
        np.testing.assert_array_equal(ours.graph.senders, r.senders)
        np.testing.assert_array_equal(ours.graph.receivers, r.receivers)
        np.testing.assert_array_equal(ours.graph.n_node, r.n_node)
        np.testing.assert_array_equal(ours.graph.n_edge, r.n_edge)


def test_budget_rules():
    rng = np.random.default_rng(0)
    n = rng.integers(5, 30, 5000)
    e = n * (n - 1)
    full = budget_from_rule("full", 16, n, e, n, e)
    assert full.n_graph == 16
    assert full.n_node == next64_strict(max(n.mean() * 16, n.max()))
    assert full.fits(n, e).all()
    paper = budget_from_rule("paper", 16, n, e, n, e)
    assert paper.n_node == next64_strict(max(n[:1000].mean() * 16, n[:1000].max()))
    fos = budget_from_rule("fit-or-skip", 16, n, e, n, e, success_ratio=0.9)
    pick = np.stack([rng.choice(5000, 15, replace=False) for _ in range(3000)])
    fit = ((n[pick].sum(1) <= fos.n_node - 1) & (e[pick].sum(1) <= fos.n_edge)).mean()
    assert fit >= 0.85  # learned on other samples: close to the asked 0.9
    assert fos.n_node < full.n_node * 1.5
    pct = budget_from_rule("percentile", 16, n, e, n, e, percentile=50)
    assert pct.n_node <= fos.n_node
    with pytest.raises(ConfigError, match="unknown rule"):
        budget_from_rule("bogus", 16, n, e, n, e)


def test_oversize_error_names_graph_and_skip_counts():
    sizes_n = [3] * 40 + [200]
    store = random_store(np.random.default_rng(0), sizes_n, [2] * 41)
    train = np.arange(40)  # the big graph is outside the 'paper' sample
    cfg = BatchingConfig(method="dynamic", batch_size=4, budget="paper")
    with pytest.raises(OversizeGraphError, match=r"graph g40 \(200 nodes, 2 edges\)"):
        make_method(cfg, store, train)
    m = make_method(BatchingConfig(method="dynamic", batch_size=4, budget="paper", oversize="skip"), store, train)
    plan = m.plan(np.arange(41))
    assert plan.skipped.tolist() == [40]
    assert plan.stats(store.n_node, store.n_edge)["graphs"] == 40
    # the default rule covers the largest graph of the dataset
    m = make_method(BatchingConfig(method="dynamic", batch_size=4), store, train)
    assert m.plan(np.arange(41)).stats(store.n_node, store.n_edge)["graphs"] == 41


def test_fit_or_skip_splits_by_default_and_counts_skips_when_asked():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 30, 400)
    store = random_store(rng, n, n)
    base = dict(method="dynamic", batch_size=8, budget="fit-or-skip", success_ratio=0.5)
    m = make_method(BatchingConfig(**base), store, np.arange(400))
    plan = m.plan(np.arange(400))
    assert plan.stats(store.n_node, store.n_edge)["graphs"] == 400
    m = make_method(BatchingConfig(**base, skip_overflow=True), store, np.arange(400))
    plan = m.plan(np.arange(400))
    s = plan.stats(store.n_node, store.n_edge)
    assert s["skipped"] > 0 and s["graphs"] + s["skipped"] == 400
    assert (np.diff(plan.bounds) <= 7).all()


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="static-pow2, static-64, static-exact, static-constant, static-max, dynamic"):
        BatchingConfig(method="greedy")
    with pytest.raises(ConfigError, match="batch_size"):
        BatchingConfig(batch_size=1)


def test_zero_edge_graphs_and_budget_value():
    store = random_store(np.random.default_rng(0), [1, 1, 1], [0, 0, 0])
    for method in METHOD_NAMES:
        m = make_method(method_config(method, batch_size=3), store, np.arange(3))
        batches = list(Loader(store, store.targets["y"], np.arange(3), m, shuffle=False).epoch())
        assert sum(b.n_real_graphs for b in batches) == 3
    with pytest.raises(ConfigError):
        Budget(10, 10, 1)


def test_prefetch_order_errors_and_shutdown():
    assert list(Prefetcher(iter(range(50)), depth=3)) == list(range(50))

    def boom():
        yield 1
        raise KeyError("bad batch")

    p = Prefetcher(boom(), depth=2)
    assert next(p) == 1
    with pytest.raises(KeyError, match="bad batch"):
        next(p)

    def forever():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    p = Prefetcher(forever(), depth=2)
    assert next(p) == 0
    p.close()
    assert not p._thread.is_alive()
    assert threading.active_count() <= before


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_on_aflow_like_and_file_datasets(method, tmp_path):
    from test_sources import _write_extxyz

    from gnn_batching.batching import make_loaders
    from gnn_batching.data import DatasetSpec, load_dataset

    p = tmp_path / "m.extxyz"
    _write_extxyz(p, n=30)
    for spec in (DatasetSpec(name="aflow-synthetic", limit=60), DatasetSpec(name=f"file:{p}", graph="radius")):
        ds = load_dataset(spec, verbose=False)
        cfg = method_config(method, batch_size=5)
        _, train, evals = make_loaders(cfg, ds.store, ds.targets(), ds.splits, seed=1)
        for loader, split in ((train, ds.splits.train), (evals["val"], ds.splits.val), (evals["test"], ds.splits.test)):
            seen = [i for b in loader.epoch(0) for i in b.index.tolist()]
            assert sorted(seen) == sorted(split.tolist())
