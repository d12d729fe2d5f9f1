"""Ragged autobatch: a one-graph function re-interpreted on a padded disjoint union gives each
graph's own value and gradient; what cannot be proven is refused (tests/test_ragged_sound.py has
the review's cases and the property test)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest

from gnn_batching.ragged import Refused, ragged_loss, union_of


def _graphs(rng, sizes):
    return [{"nodes": rng.integers(0, 5, n), "edges": rng.normal(size=(e, 4)).astype(np.float32),
             "senders": rng.integers(0, max(n, 1), e), "receivers": rng.integers(0, max(n, 1), e)} for n, e in sizes]


def _one(gr):
    n, e = len(gr["nodes"]), len(gr["senders"])
    return jraph.GraphsTuple(nodes=jnp.asarray(gr["nodes"], jnp.int32), edges=jnp.asarray(gr["edges"]),
                             senders=jnp.asarray(gr["senders"], jnp.int32),
                             receivers=jnp.asarray(gr["receivers"], jnp.int32), n_node=jnp.array([n]),
                             n_edge=jnp.array([e]), globals=None)


def gcn(p, g):
    h = p["emb"][g.nodes]
    w = jnp.exp(-g.edges[:, 3:4])
    m = jax.ops.segment_sum(h[g.senders] * w, g.receivers, num_segments=g.nodes.shape[0])
    h = jnp.tanh(h @ p["W"] + m)
    centred = h - jnp.mean(h, axis=0)  # a per-graph value broadcast over the graph's nodes
    # per-graph values meet parameters: an empty slot's 0/0 or -inf would reach their gradient
    return (jnp.mean(h, axis=0) @ p["W"]).sum() + h.shape[0] + jnp.max(h[:, 0]) * p["W"][0, 0] + \
        jnp.sum(centred ** 2) / h.shape[0]


@pytest.mark.parametrize("pad", [(2, 3), (0, 0)])  # a padding graph with edges; an EMPTY graph slot
def test_union_values_and_gradients_equal_each_graph_alone(pad):
    """Means, maxima and sizes of an empty slot stay finite: a 0/0 there would put NaN in every
    gradient through the masked sum (the cotangent 0 times 1/0)."""
    rng = np.random.default_rng(0)
    p = {"emb": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "W": jnp.asarray(rng.normal(size=(3, 3)),
                                                                                   jnp.float32)}
    graphs = _graphs(rng, [(3, 4), (1, 0), (6, 10), (2, 2)])  # a single atom without edges included
    u, n_graph = union_of(graphs, n_pad_nodes=pad[0], n_pad_edges=pad[1])
    union = jax.jit(lambda p: ragged_loss(gcn, p, u, n_graph))(p)
    alone = np.asarray(jax.jit(lambda p: jnp.stack([gcn(p, _one(gr)) for gr in graphs]))(p))  # one program: fast
    np.testing.assert_allclose(np.asarray(union[:-1]), alone, rtol=1e-5)
    g_union = jax.jit(jax.grad(lambda p: ragged_loss(gcn, p, u, n_graph)[:-1].sum()))(p)
    g_alone = jax.jit(jax.grad(lambda p: sum(gcn(p, _one(gr)) for gr in graphs)))(p)
    for k in p:
        np.testing.assert_allclose(np.asarray(g_union[k]), np.asarray(g_alone[k]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("body, primitive", [
    (lambda h: jnp.sort(h, axis=0).sum(), "sort at .*test_ragged.py.*sorts along the node/edge axis"),
    (lambda h: jnp.argmax(h[:, 0]), "argmax at .*test_ragged.py"),
    (lambda h: (h[:, None, :] - h[None, :, :]).sum(), "n x n"),
    (lambda h: (h.T @ h).sum(), "transpose"),
])
def test_what_cannot_be_proven_is_refused_naming_the_primitive(body, primitive):
    rng = np.random.default_rng(1)
    p = {"emb": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)}
    u, n_graph = union_of(_graphs(rng, [(3, 4), (2, 1)]))
    with pytest.raises(Refused, match=primitive):
        ragged_loss(lambda p, g: body(p["emb"][g.nodes]), p, u, n_graph)


def test_a_packed_batch_gives_the_mean_over_its_real_graphs_alone():
    """On a real padded batch of the packed method (padding graph, padding edges on a hub node):
    the masked mean of the one-graph loss over its real graphs, gradient included."""
    from gnn_batching.batching import BatchingConfig, make_loaders
    from gnn_batching.data import DatasetSpec, load_dataset
    from gnn_batching.ragged import masked_mean_loss

    ds = load_dataset(DatasetSpec(name="aflow-synthetic", limit=40), verbose=False)
    _, train, _ = make_loaders(BatchingConfig(method="packed", batch_size=8), ds.store, ds.targets(), ds.splits)
    batch = next(iter(train.epoch(0)))
    rng = np.random.default_rng(2)
    p = {"emb": jnp.asarray(rng.normal(size=(ds.store.n_species, 3)), jnp.float32),
         "W": jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)}

    def loss_one(p, g, target):
        return (gcn(p, g) - target) ** 2

    a = batch.arrays
    loss = jax.jit(masked_mean_loss(loss_one))
    got, grad = jax.jit(jax.value_and_grad(lambda p: loss(p, a.graph, a.targets, a.mask)))(p)
    store = ds.store
    singles = []
    for i in batch.index:
        lo, hi = store.node_offsets[i], store.node_offsets[i + 1]
        elo, ehi = store.edge_offsets[i], store.edge_offsets[i + 1]
        singles.append(({"nodes": store.species[lo:hi], "edges": store.edges[elo:ehi],
                         "senders": store.senders[elo:ehi], "receivers": store.receivers[elo:ehi]},
                        float(ds.targets()[i])))
    want, want_grad = jax.jit(jax.value_and_grad(
        lambda p: sum(loss_one(p, _one(g), t) for g, t in singles) / len(singles)))(p)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    for k in p:
        np.testing.assert_allclose(np.asarray(grad[k]), np.asarray(want_grad[k]), rtol=1e-4, atol=1e-6)


OPS = {  # one-graph building blocks, node features h (n, f) -> (n, f)
    "tanh": lambda p, g, h: jnp.tanh(h),
    "dense": lambda p, g, h: h @ p["W"],
    "message": lambda p, g, h: h + jax.ops.segment_sum(h[g.senders] * jnp.exp(-g.edges[:, 3:4]), g.receivers,
                                                       num_segments=g.nodes.shape[0]),
    "message_max": lambda p, g, h: jnp.maximum(h, jax.ops.segment_max(h[g.receivers], g.senders,
                                                                      num_segments=g.nodes.shape[0])),
    "centre": lambda p, g, h: h - jnp.mean(h, axis=0),
    "scale_by_size": lambda p, g, h: h / h.shape[0],
    "edge_count": lambda p, g, h: h * (1.0 + g.senders.shape[0]),
    "graph_gate": lambda p, g, h: h * jax.nn.sigmoid(jnp.sum(h, axis=0, keepdims=True)),
    "relu": lambda p, g, h: jax.nn.relu(h),
    "square_norm": lambda p, g, h: h / (1.0 + jnp.sum(h * h, axis=1, keepdims=True)),
}
READOUTS = {
    "sum": lambda h: jnp.sum(h),
    "mean": lambda h: jnp.mean(h),
    "max": lambda h: jnp.max(h[:, 0]) + jnp.min(h[:, -1]),
    "mean_then_square": lambda h: jnp.sum(jnp.mean(h, axis=0) ** 2),
}


@pytest.mark.slow  # end to end / many compiles: run by .ci/run and `pytest -m slow`
@pytest.mark.parametrize("seed", range(12))
def test_random_one_graph_functions_mean_the_same_on_the_union(seed):
    """A property test: random compositions of the supported patterns, random graphs (a single
    atom, no edges, a padding graph with edges): each graph's value and the gradient equal."""
    rng = np.random.default_rng(100 + seed)
    names = list(rng.choice(list(OPS), size=int(rng.integers(1, 6))))
    readout = str(rng.choice(list(READOUTS)))

    def fn(p, g, target):
        h = p["emb"][g.nodes]
        for name in names:
            h = OPS[name](p, g, h)
        return (READOUTS[readout](h) - target) ** 2

    p = {"emb": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
         "W": jnp.asarray(rng.normal(size=(4, 4)) / 2, jnp.float32)}
    sizes = [(int(rng.integers(1, 8)), 0) for _ in range(int(rng.integers(1, 5)))]
    sizes = [(n, int(rng.integers(0, 3 * n + 1))) for n, _ in sizes] + [(1, 0)]
    graphs = _graphs(rng, sizes)
    targets = rng.normal(size=len(graphs) + 1).astype(np.float32)
    u, n_graph = union_of(graphs, n_pad_nodes=int(rng.integers(1, 4)), n_pad_edges=int(rng.integers(0, 4)))
    union = ragged_loss(fn, p, u, n_graph, jnp.asarray(targets))
    alone = np.array([float(fn(p, _one(gr), targets[i])) for i, gr in enumerate(graphs)])
    np.testing.assert_allclose(np.asarray(union[:-1]), alone, rtol=1e-4, atol=1e-5, err_msg=f"{names} {readout}")
    g_union = jax.grad(lambda p: ragged_loss(fn, p, u, n_graph, jnp.asarray(targets))[:-1].sum())(p)
    g_alone = jax.grad(lambda p: sum(fn(p, _one(gr), targets[i]) for i, gr in enumerate(graphs)))(p)
    for k in p:
        np.testing.assert_allclose(np.asarray(g_union[k]), np.asarray(g_alone[k]), rtol=1e-4, atol=1e-5,
                                   err_msg=f"{names} {readout}")


@pytest.mark.slow  # end to end / many compiles: run by .ci/run and `pytest -m slow`
@pytest.mark.lowest  # also against the lowest allowed versions (.ci/run)
@pytest.mark.parametrize("name", ["schnet", "mpeu", "painn"])
def test_the_builtin_models_written_once_run_ragged_as_hand_batched(name):
    """The package's SchNet and MPEU applied to ONE unpadded graph, re-interpreted on a packed
    batch: each graph's prediction and the loss gradient equal the hand-batched model's."""
    from gnn_batching.batching import BatchingConfig, make_loaders
    from gnn_batching.config import ModelConfig
    from gnn_batching.data import DatasetSpec, load_dataset
    from gnn_batching.models import make_model
    from gnn_batching.ragged import from_batch

    ds = load_dataset(DatasetSpec(name="aflow-synthetic", limit=40), verbose=False)
    _, train, _ = make_loaders(BatchingConfig(method="packed", batch_size=8), ds.store, ds.targets(), ds.splits)
    a = next(iter(train.epoch(0))).arrays
    model = make_model(ModelConfig(name=name, latent_size=8, n_rbf=16), ds.store.n_species)  # PaiNN: vectors
    params = model.init(jax.random.PRNGKey(0), a.graph)
    union, n_graph = from_batch(a.graph)

    def pred_one(p, g):
        return model.apply(p, g)[0]

    ragged = ragged_loss(pred_one, params, union, n_graph)
    batched = model.apply(params, a.graph)
    mask = np.asarray(a.mask)
    np.testing.assert_allclose(np.asarray(ragged)[mask], np.asarray(batched)[mask], rtol=1e-5, atol=1e-6)
    t = jnp.asarray(a.targets)

    def loss_ragged(p):
        per = ragged_loss(lambda p, g, y: (model.apply(p, g)[0] - y) ** 2, p, union, n_graph, t)
        return jnp.sum(jnp.where(a.mask, per, 0.0)) / mask.sum()

    def loss_batched(p):
        return jnp.sum(jnp.where(a.mask, (model.apply(p, a.graph) - t) ** 2, 0.0)) / mask.sum()

    g1, g2 = jax.grad(loss_ragged)(params), jax.grad(loss_batched)(params)
    for x, y in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # end to end / many compiles: run by .ci/run and `pytest -m slow`
@pytest.mark.lowest  # also against the lowest allowed versions (.ci/run)
@pytest.mark.parametrize("base_method", ["packed", "dynamic", "buckets"])
def test_autobatch_ragged_trains_exactly_as_hand_batched_packed(tmp_path, base_method):
    """`batching.method: autobatch` in ragged mode runs the one-graph model on its base method's
    batches: the same batches, losses, compiles and evaluation as the hand-batched run of it."""
    import pandas as pd
    from conftest import TEST_CONFIG

    from gnn_batching.config import load_config
    from gnn_batching.train.run import run

    base = ["train.num_train_steps=6", "train.eval_every=3"]
    rag = run(load_config(TEST_CONFIG, [*base, "batching.method=autobatch", "batching.autobatch_mode=ragged",
                                        f"batching.autobatch_base={base_method}"]),
              out_dir=str(tmp_path / "ragged"), verbose=False)
    hand = run(load_config(TEST_CONFIG, [*base, f"batching.method={base_method}"]), out_dir=str(tmp_path / "packed"),
               verbose=False)
    assert rag["autobatch_mode_used"] == "ragged" and "autobatch_mode_used" not in hand
    a, b = pd.read_csv(tmp_path / "ragged" / "steps.csv"), pd.read_csv(tmp_path / "packed" / "steps.csv")
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    assert a["real_graphs"].tolist() == b["real_graphs"].tolist() and a["n_node"].tolist() == b["n_node"].tolist()
    assert rag["train_step_compiles"] == hand["train_step_compiles"]
    assert rag["test_mae"] == pytest.approx(hand["test_mae"], rel=1e-5)


@pytest.mark.slow  # end to end / many compiles: run by .ci/run and `pytest -m slow`
def test_auto_falls_back_to_vmap_and_says_why(tmp_path):
    """The dense one-graph model (n x n pairs) cannot be proven: auto runs vmap, naming the
    reason in the summary; ragged mode refuses before any output."""
    from conftest import TEST_CONFIG

    from gnn_batching.config import load_config
    from gnn_batching.errors import ConfigError
    from gnn_batching.train.run import run

    base = ["train.num_train_steps=3", "train.eval_every=0", "batching.method=autobatch", "model.form=dense",
            "dataset.name=qm9", "dataset.limit=60"]
    s = run(load_config(TEST_CONFIG, [*base, "batching.autobatch_mode=auto"]), out_dir=str(tmp_path / "auto"),
            verbose=False)
    assert s["autobatch_mode_used"] == "vmap" and s["autobatch_mode_reason"].startswith("ragged refused: ragged: ")
    assert "dense.py" in s["autobatch_mode_reason"]  # the model's own source line
    with pytest.raises(ConfigError, match=r"batching.autobatch_mode: ragged: ragged: .*dense.py"):
        run(load_config(TEST_CONFIG, [*base, "batching.autobatch_mode=ragged"]), out_dir=str(tmp_path / "r"),
            verbose=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # end to end / many compiles: run by .ci/run and `pytest -m slow`
@pytest.mark.lowest  # also against the lowest allowed versions (.ci/run)
@pytest.mark.parametrize("name", ["schnet", "mpeu", "painn"])
def test_ragged_equals_hand_batched_on_every_step_and_vmap_over_the_epoch(name):
    """The run's own step sums: on every packed batch of an epoch (a single atom, a zero-edge
    graph, empty graph slots) the ragged loss and gradient equal the hand-batched model's; summed
    over the epoch they equal vmap mode's (the same graphs, each once, in per-graph slots)."""
    from conftest import random_store

    from gnn_batching.batching import BatchingConfig, make_method
    from gnn_batching.config import ModelConfig
    from gnn_batching.data.store import TargetStats
    from gnn_batching.models import make_model
    from gnn_batching.train.ragged_steps import make_ragged_sums
    from gnn_batching.train.slot_steps import make_loss_one, slots_loss
    from gnn_batching.train.steps import make_sums

    rng = np.random.default_rng(3)
    store = random_store(rng, [1, 3, 5, 8, 4, 7, 2, 6, 9, 5, 3, 6], [0, 0, 12, 30, 6, 20, 2, 18, 40, 10, 4, 16])
    index, y, stats = np.arange(len(store)), store.targets["y"], TargetStats(mean=0.3, std=1.7)
    model = make_model(ModelConfig(name=name, latent_size=8, n_rbf=16), store.n_species)

    def epoch(method_cfg):
        m = make_method(method_cfg, store, index)
        return list(m.iterate(store, m.plan(index), y))

    packed = epoch(BatchingConfig(method="packed", batch_size=4))
    assert sorted(int(i) for b in packed for i in b.index) == index.tolist()
    assert any(b.n_real_graphs < b.shape[2] - 1 for b in packed)  # graph slots left empty
    params = model.init(jax.random.PRNGKey(0), packed[0].arrays.graph)["params"]
    ragged_sums, hand_sums = make_ragged_sums(model, stats)[0], make_sums(model, stats)[0]

    def value_and_grad(sums):  # one compile per batch shape
        return jax.jit(jax.value_and_grad(lambda p, batch: sums(p, batch)[0]))

    ragged, hand = value_and_grad(ragged_sums), value_and_grad(hand_sums)
    total, grads = 0.0, jax.tree_util.tree_map(jnp.zeros_like, params)
    for b in packed:
        (lr, gr), (lh, gh) = ragged(params, b.arrays), hand(params, b.arrays)
        np.testing.assert_allclose(lr, lh, rtol=1e-5)
        for x, z in zip(jax.tree_util.tree_leaves(gr), jax.tree_util.tree_leaves(gh)):
            np.testing.assert_allclose(x, z, rtol=1e-5, atol=1e-6)
        total, grads = total + lr, jax.tree_util.tree_map(jnp.add, grads, gr)

    vmap = epoch(BatchingConfig(method="autobatch", autobatch_mode="vmap", batch_size=4, buckets=3))
    assert sorted(int(i) for b in vmap for i in b.index) == index.tolist()
    loss_one = make_loss_one(model, stats)
    slots = value_and_grad(lambda p, a: slots_loss(loss_one, p, a))
    v_total, v_grads = 0.0, jax.tree_util.tree_map(jnp.zeros_like, params)
    for b in vmap:
        lv, gv = slots(params, b.arrays)
        v_total, v_grads = v_total + lv, jax.tree_util.tree_map(jnp.add, v_grads, gv)
    np.testing.assert_allclose(total, v_total, rtol=1e-5)
    for x, z in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(v_grads)):
        np.testing.assert_allclose(x, z, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # end to end / many compiles: run by .ci/run and `pytest -m slow`
def test_the_library_api_in_both_modes():
    """`autobatch.loader` / `init_state` / `make_train_step`: ragged mode trains a plain one-graph
    function on packed batches (its first loss the mean over each graph alone), vmap mode runs on
    per-graph slots; a vmap batch given to a ragged step is refused, naming the mismatch."""
    import flax.linen as nn
    import optax

    from gnn_batching import autobatch
    from gnn_batching.data import DatasetSpec, load_dataset
    from gnn_batching.errors import ConfigError

    class Plain(nn.Module):
        @nn.compact
        def __call__(self, g):
            h = nn.Dense(8)(jax.nn.one_hot(g.nodes, 40))
            h = jnp.tanh(h + jax.ops.segment_sum(h[g.senders], g.receivers, num_segments=h.shape[0]))
            return nn.Dense(1)(jnp.mean(h, axis=0))[0]

    ds = load_dataset(DatasetSpec(name="aflow-synthetic", limit=40), verbose=False)
    model = Plain()

    def loss_one(params, graph, target):
        return (model.apply({"params": params}, graph) - target) ** 2

    train = autobatch.loader(ds, batch_size=8, seed=0)
    assert train.method.name == "packed" and train.method.step_form == "ragged"
    state = autobatch.init_state(model, optax.sgd(0.0), train, seed=0)
    step = autobatch.make_train_step(loss_one, train)
    batch = next(iter(train.epoch(0)))
    _, metrics = step(state, batch.arrays)
    assert step.checked.max_diff < 1e-4 and len(step.checked.graphs) >= 2  # the first call's check ran
    store, y = ds.store, ds.targets()
    alone = []
    for i in batch.index:
        lo, hi, elo, ehi = store.node_offsets[i], store.node_offsets[i + 1], store.edge_offsets[i], \
            store.edge_offsets[i + 1]
        g = _one({"nodes": store.species[lo:hi], "edges": store.edges[elo:ehi], "senders": store.senders[elo:ehi],
                  "receivers": store.receivers[elo:ehi]})
        alone.append(float(loss_one(state.params, g, y[i])))
    assert float(metrics["loss"]) == pytest.approx(np.mean(alone), rel=1e-5)

    slots = autobatch.loader(ds, batch_size=8, seed=0, mode="vmap")
    vbatch = next(iter(slots.epoch(0)))
    with pytest.raises(ConfigError, match="vmap-mode batch"):
        step(state, vbatch.arrays)
    vstep = autobatch.make_train_step(loss_one, slots)
    vstate = autobatch.init_state(model, optax.sgd(0.0), slots, seed=0)
    _, vm = vstep(vstate, vbatch.arrays)
    assert np.isfinite(float(vm["loss"]))


@pytest.mark.slow  # end to end / many compiles: run by .ci/run and `pytest -m slow`
def test_bench_step_times_the_mode_a_run_would_use(capsys):
    """`bench step`: autobatch with the sparse per-graph model times the ragged step on packed
    batches; the dense form (n x n pairs, refused) times vmap's slots; the rows say which."""
    import json

    from gnn_batching.cli import main

    assert main(["bench", "step", "--dataset", "qm9", "--limit", "80", "--models", "schnet", "--methods", "packed",
                 "autobatch", "--forms", "sparse", "dense", "--batch-sizes", "8", "--steps", "2", "--json"]) == 0
    rows = {(r["method"], r["form"]): r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {("packed", "sparse"), ("autobatch", "sparse"), ("autobatch", "dense")}
    assert rows["packed", "sparse"]["layout"] == "disjoint-union"
    assert rows["autobatch", "sparse"]["layout"] == "ragged"
    assert rows["autobatch", "sparse"]["autobatch_mode_used"] == "ragged"
    dense = rows["autobatch", "dense"]
    assert dense["layout"] == "slots" and dense["autobatch_mode_reason"].startswith("ragged refused")


def test_the_base_method_must_batch_graphs_as_one_union():
    from gnn_batching.config import BatchingConfig
    from gnn_batching.errors import ConfigError

    for bad in ("autobatch", "nope"):
        with pytest.raises(ConfigError, match="batching.autobatch_base"):
            BatchingConfig(method="autobatch", autobatch_base=bad)
    with pytest.raises(ConfigError, match="batching.autobatch_mode"):
        BatchingConfig(method="autobatch", autobatch_mode="fast")
