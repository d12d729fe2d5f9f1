"""Ragged autobatch (work in progress, issue 24): a one-graph function re-interpreted on a padded
disjoint union gives each graph's own value and gradient; what cannot be proven is refused."""

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
    return jnp.mean(h, axis=0).sum() + h.shape[0] + jnp.max(h[:, 0]) + jnp.sum(centred ** 2) / h.shape[0]


def test_union_values_and_gradients_equal_each_graph_alone():
    rng = np.random.default_rng(0)
    p = {"emb": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "W": jnp.asarray(rng.normal(size=(3, 3)),
                                                                                   jnp.float32)}
    graphs = _graphs(rng, [(3, 4), (1, 0), (6, 10), (2, 2)])  # a single atom without edges included
    u, n_graph = union_of(graphs, n_pad_nodes=2, n_pad_edges=3)
    union = jax.jit(lambda p: ragged_loss(gcn, p, u, n_graph))(p)
    alone = np.array([float(gcn(p, _one(gr))) for gr in graphs])
    np.testing.assert_allclose(np.asarray(union[:-1]), alone, rtol=1e-5)
    g_union = jax.grad(lambda p: ragged_loss(gcn, p, u, n_graph)[:-1].sum())(p)
    g_alone = jax.grad(lambda p: sum(gcn(p, _one(gr)) for gr in graphs))(p)
    for k in p:
        np.testing.assert_allclose(np.asarray(g_union[k]), np.asarray(g_alone[k]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("body, primitive", [
    (lambda h: jnp.sort(h, axis=0).sum(), "sort"),
    (lambda h: jnp.cumsum(h, axis=0).sum(), "cumsum"),
    (lambda h: h[0].sum(), "slice"),
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
    got, grad = jax.value_and_grad(lambda p: loss(p, a.graph, a.targets, a.mask))(p)
    store = ds.store
    singles = []
    for i in batch.index:
        lo, hi = store.node_offsets[i], store.node_offsets[i + 1]
        elo, ehi = store.edge_offsets[i], store.edge_offsets[i + 1]
        singles.append(({"nodes": store.species[lo:hi], "edges": store.edges[elo:ehi],
                         "senders": store.senders[elo:ehi], "receivers": store.receivers[elo:ehi]},
                        float(ds.targets()[i])))
    want, want_grad = jax.value_and_grad(
        lambda p: sum(loss_one(p, _one(g), t) for g, t in singles) / len(singles))(p)
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
def test_autobatch_ragged_trains_exactly_as_hand_batched_packed(tmp_path):
    """`batching.method: autobatch` in ragged mode runs the one-graph model on packed batches:
    the same batches, losses, compiles and evaluation as the hand-batched `packed` run."""
    import pandas as pd
    from conftest import TEST_CONFIG

    from gnn_batching.config import load_config
    from gnn_batching.train.run import run

    base = ["train.num_train_steps=6", "train.eval_every=3"]
    rag = run(load_config(TEST_CONFIG, [*base, "batching.method=autobatch", "batching.autobatch_mode=ragged"]),
              out_dir=str(tmp_path / "ragged"), verbose=False)
    hand = run(load_config(TEST_CONFIG, [*base, "batching.method=packed"]), out_dir=str(tmp_path / "packed"),
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
