"""Autobatch: per-graph losses vmapped per shape bucket equal the disjoint-union step; the agenda
places every graph exactly once; the compiled variants stay within the reported bound."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gnn_batching.batching import BatchingConfig, Loader, assemble, make_method
from gnn_batching.batching.menu import smallest_cover
from gnn_batching.config import load_config
from gnn_batching.data.store import TargetStats
from gnn_batching.errors import ConfigError
from gnn_batching.models import ModelConfig, make_model
from gnn_batching.train.run import run
from gnn_batching.train.slot_steps import first_slot_graph, make_loss_one, make_slot_steps, slots_loss
from gnn_batching.train.steps import init_state, make_loss, make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")


def _store_with_unique_pairs(rng, n_nodes, n_edges):
    """A random store whose edges never repeat a (sender, receiver) pair (so the dense form holds them)."""
    store = random_store(rng, n_nodes, n_edges)
    for g, (n, e) in enumerate(zip(n_nodes, n_edges)):
        a = store.edge_offsets[g]
        pairs = rng.permutation(n * n)[:e]
        store.senders[a : a + e] = pairs // n
        store.receivers[a : a + e] = pairs % n
    store.__post_init__()  # refresh derived arrays
    return store


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(3)
    # a single-atom graph (no edge), a zero-edge graph, and ordinary ones of several sizes
    n = np.array([1, 3, 5, 8, 4, 7, 2, 6, 9, 5, 3, 6])
    e = np.array([0, 0, 12, 30, 6, 20, 2, 18, 40, 10, 4, 16])
    return _store_with_unique_pairs(rng, n, e)


@pytest.mark.parametrize("name", [pytest.param("mpeu", marks=pytest.mark.slow), "schnet"])
def test_autobatched_loss_and_gradients_equal_the_disjoint_union(small, name):
    store = small
    index = np.arange(len(store))
    stats = TargetStats(mean=0.3, std=1.7)
    method = make_method(BatchingConfig(method="autobatch", autobatch_mode="vmap", batch_size=8, buckets=3), store,
                         index)
    plan = method.plan(index)
    batches = list(method.iterate(store, plan, store.targets["y"]))
    assert {0, 1} <= {int(i) for b in batches for i in b.index}  # the single-atom and the zero-edge graph
    assert any(b.n_real_graphs < b.shape[2] for b in batches)  # and a step with empty slots
    for batch in batches:
        _check_step(store, batch, name, stats)


def _check_step(store, batch, name, stats):
    idx = batch.index
    union = assemble(store, idx, (int(store.n_node[idx].sum()) + 1, int(store.n_edge[idx].sum()), len(idx) + 1),
                     store.targets["y"])
    for form in ("sparse", "dense"):
        model = make_model(ModelConfig(name=name, latent_size=8, n_rbf=16, form=form), store.n_species)
        sparse = make_model(ModelConfig(name=name, latent_size=8, n_rbf=16), store.n_species)
        params = sparse.init(jax.random.PRNGKey(0), union.graph)["params"]  # one set for both forms
        loss_one = make_loss_one(model, stats)

        def ab_loss(p, batch=batch, loss_one=loss_one):
            total, count = slots_loss(loss_one, p, batch.arrays)
            return total / count

        def union_loss(p, sparse=sparse):
            return make_loss(sparse, stats)({"params": p}, union.graph, union.targets, union.graph_mask)

        la, ga = jax.jit(jax.value_and_grad(ab_loss))(params)
        lu, gu = jax.jit(jax.value_and_grad(union_loss))(params)
        np.testing.assert_allclose(la, lu, rtol=2e-5, err_msg=form)
        for a, u in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gu)):
            np.testing.assert_allclose(a, u, rtol=2e-4, atol=2e-6, err_msg=form)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(1, 9), st.integers(0, 25)), min_size=1, max_size=12),
       extra_slots=st.integers(0, 3), wide=st.booleans(), seed=st.integers(0, 3))
def test_slot_assembly_equals_per_graph_batches_stacked(sizes, extra_slots, wide, seed):
    """The vectorised slot stack holds exactly what one `assemble` per graph, stacked, holds:
    single-atom and zero-edge graphs, empty slots, int16 pair gathers and int32 indices."""
    from gnn_batching.batching.slots import assemble_slots, stack_slots

    rng = np.random.default_rng(seed)
    n, e = (np.array(x) for x in zip(*sizes))
    store = random_store(rng, n, e)
    if wide:  # senders/receivers too wide for the int16 pair view: the other gather path
        store.senders, store.receivers = store.senders.astype(np.int32), store.receivers.astype(np.int32)
        store.__post_init__()
        assert store.sr_pairs is None
    idx = rng.permutation(len(store))
    shape = (int(n.max()) + 1 + int(rng.integers(0, 3)), int(e.max()) + int(rng.integers(0, 4)))
    n_slots = len(idx) + extra_slots
    y = store.targets["y"]
    got = assemble_slots(store, idx, n_slots, shape, y)
    one = [assemble(store, idx[j : j + 1], (*shape, 2), y, "hub") for j in range(len(idx))]
    want = stack_slots(one, n_slots, assemble(store, idx[:0], (*shape, 2), y, "hub"))
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.tuples(st.integers(1, 12), st.integers(0, 30)), min_size=1, max_size=80),
       bs=st.integers(2, 16), k=st.integers(1, 5), seed=st.integers(0, 3))
def test_agenda_places_every_graph_once_in_a_slot_that_holds_it(sizes, bs, k, seed):
    rng = np.random.default_rng(seed)
    store = random_store(rng, [s[0] for s in sizes], [s[1] for s in sizes])
    index = np.arange(len(store))
    m = make_method(BatchingConfig(method="autobatch", autobatch_mode="vmap", batch_size=bs, buckets=k), store, index,
                    seed=seed)
    loader = Loader(store, store.targets["y"], index, m, shuffle=True, seed=seed)
    for epoch in range(2):
        plan = loader.plan(epoch)
        assert sorted(plan.order.tolist()) == index.tolist()
        own = smallest_cover(m.buckets, store.n_node[plan.order] + 1, store.n_edge[plan.order])
        assert (plan.groups >= own).all()  # a graph only ever goes to a slot at least its size
        for s in range(len(plan)):
            grp = plan.groups[plan.bounds[s] : plan.bounds[s + 1]]
            assert (np.bincount(grp, minlength=len(m.slots)) <= m.slots).all()
        seen = [i for b in loader.epoch(epoch) for i in b.index.tolist()]
        assert sorted(seen) == index.tolist()


def test_every_bucket_gets_its_share_and_none_starves():
    rng = np.random.default_rng(0)
    n = np.clip(np.round(rng.normal(18, 3, 4000)), 3, 29).astype(int)
    store = random_store(rng, n, np.zeros_like(n))
    store.n_edge = n * (n - 1)
    m = make_method(BatchingConfig(method="autobatch", autobatch_mode="vmap", batch_size=32, buckets=4), store,
                    np.arange(4000))
    plan = m.plan(rng.permutation(4000))
    steps = len(plan)
    assert steps <= int(np.ceil(4000 / m.slots.sum()) * 1.15)  # the agenda does not drag a long tail
    own = smallest_cover(m.buckets, n[plan.order] + 1, store.n_edge[plan.order])
    assert (plan.groups >= own).all() and (plan.groups > own).any()  # slots are lent only to smaller graphs
    pos = np.repeat(np.arange(steps), np.diff(plan.bounds))
    for b in range(len(m.slots)):  # every bucket's graphs are spread over the whole epoch
        where = pos[own == b]
        assert where.min() < 0.1 * steps and where.max() > 0.8 * steps
    s = plan.stats(n, store.n_edge)
    assert s["graphs"] == 4000 and s["node_fill"] > 0.7


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_one_compiled_step_over_epochs(small):
    store = small
    index = np.arange(len(store))
    stats = TargetStats(mean=0.0, std=1.0)
    m = make_method(BatchingConfig(method="autobatch", autobatch_mode="vmap", batch_size=5, buckets=3), store,
                    index)
    assert m.describe()["compiled_variants_bound"] == {"train": 1, "eval": 1}
    model = make_model(ModelConfig(name="schnet", latent_size=4, n_rbf=8), store.n_species)
    train_step, eval_step = make_slot_steps(model, stats)
    loader = Loader(store, store.targets["y"], index, m, shuffle=True, seed=1)
    batches = [b for e in range(3) for b in loader.epoch(e)]
    assert len(batches) > 3 and len({tuple(b.shape) for b in batches}) == 1
    state = init_state(model, make_optimizer(1e-3, 100, 0.9, True), first_slot_graph(batches[0].arrays), 0)
    for b in batches:
        state, out = train_step(state, jax.device_put(b.arrays))
        eval_step(state, b.arrays)
    assert train_step._cache_size() == 1 and eval_step._cache_size() == 1
    assert np.isfinite(float(out["loss"]))


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_run_end_to_end_with_both_forms_and_refusals(tmp_path):
    base = ["batching.method=autobatch", "batching.autobatch_mode=vmap", "train.num_train_steps=8",
            "train.eval_every=4", "model.latent_size=8", "dataset.limit=150", "model.n_rbf=16"]
    for form in ("sparse", "dense"):
        s = run(load_config(SMOKE, [*base, f"model.form={form}"]), out_dir=str(tmp_path / form), verbose=False)
        data = json.loads((tmp_path / form / "data.json").read_text())
        assert s["train_step_compiles"] == 1 and s["eval_step_compiles"] == 1 and s["compiles_in_timed_window"] == 0
        assert (s["val_graphs"], s["test_graphs"]) == (data["n_val"], data["n_test"])
        assert s["model_form"] == form and s["distinct_train_shapes"] == 1 and 0 < s["node_fill"] <= 1
    with pytest.raises(ConfigError, match="needs batching.method: autobatch"):
        load_config(SMOKE, ["model.form=dense"])
    crystals = load_config(SMOKE, [*base, "model.form=dense", "dataset.name=aflow-synthetic", "dataset.limit=40"])
    with pytest.raises(ConfigError, match="repeat a \\(sender, receiver\\) pair"):
        run(crystals, out_dir=str(tmp_path / "c"), verbose=False)


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_dense_forms_predict_what_the_sparse_forms_predict(small):
    store = small
    m = make_method(BatchingConfig(method="autobatch", autobatch_mode="vmap", batch_size=len(store) + 1, buckets=2),
                    store,
                    np.arange(len(store)))
    batch = next(iter(m.iterate(store, m.plan(np.arange(len(store))), store.targets["y"])))
    for name in ("mpeu", "schnet"):
        sparse = make_model(ModelConfig(name=name, latent_size=8, n_rbf=16), store.n_species)
        dense = make_model(ModelConfig(name=name, latent_size=8, n_rbf=16, form="dense"), store.n_species)
        g0 = first_slot_graph(batch.arrays)
        params = sparse.init(jax.random.PRNGKey(1), g0)
        for bucket in batch.arrays:
            ps = jax.vmap(lambda g, p=params, sp=sparse: sp.apply(p, g)[0])(bucket.graph)
            pd_ = jax.vmap(lambda g, p=params, de=dense: de.apply(p, g)[0])(bucket.graph)
            np.testing.assert_allclose(jnp.where(bucket.mask, ps, 0), jnp.where(bucket.mask, pd_, 0), rtol=1e-5,
                                       atol=1e-6)


@pytest.mark.parametrize("name", ["mpeu", "schnet"])
def test_autobatched_evaluation_counts_only_real_slots(small, name):
    """Evaluation sums over the slots of a step with EMPTY slots equal the disjoint union's over
    the same graphs (an empty slot's prediction must not reach the error sums or the count)."""
    from gnn_batching.train.layouts import init_graph, steps_for

    store = small
    index = np.arange(len(store))
    stats = TargetStats(mean=0.3, std=1.7)
    method = make_method(BatchingConfig(method="autobatch", autobatch_mode="vmap", batch_size=8, buckets=3), store,
                         index)
    batches = [b for b in method.iterate(store, method.plan(index), store.targets["y"]) if b.n_real_graphs < b.shape[2]]
    assert batches  # steps with empty slots
    model = make_model(ModelConfig(name=name, latent_size=8, n_rbf=16), store.n_species)
    _, slot_eval = steps_for("slots", model, stats)
    _, union_eval = steps_for("disjoint-union", model, stats)
    for batch in batches:
        idx = batch.index
        union = assemble(store, idx, (int(store.n_node[idx].sum()) + 1, int(store.n_edge[idx].sum()), len(idx) + 1),
                         store.targets["y"])
        state = init_state(model, make_optimizer(1e-3, 1, 1.0, False), init_graph("disjoint-union", union.arrays), 0)
        a, u = slot_eval(state, batch.arrays), union_eval(state, union.arrays)
        assert float(a["n"]) == float(u["n"]) == len(idx)
        np.testing.assert_allclose([float(a["sse"]), float(a["sae"])], [float(u["sse"]), float(u["sae"])], rtol=2e-5)
