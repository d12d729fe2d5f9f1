"""Shared by the ragged tests: random graphs of 1-50 nodes and a comparison of a one-graph
function on the union against each graph run alone (values and gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from gnn_batching.ragged import Refused, ragged_loss, union_of

F = 3  # feature width: no graph size of the tests collides with it by accident (1 and 2 do, on purpose)
RTOL = 1e-4  # the bar: values and gradients within 1e-4 relative of each graph alone
ATOL = 1e-6  # float32 noise where a value cancels to ~0 (a centred mean): below it, no relative figure


def graphs(rng, count: int = 12, max_nodes: int = 50) -> list[dict]:
    """``count`` graphs: one single atom without edges, one two-node graph without edges, one of
    ``max_nodes`` nodes, the rest random (1-``max_nodes`` nodes, 0-3n edges, some none)."""
    sizes = [(1, 0), (2, 0), (max_nodes, 2 * max_nodes)]
    while len(sizes) < count:
        n = int(rng.integers(1, max_nodes + 1))
        e = 0 if rng.random() < 0.2 else int(rng.integers(0, 3 * n + 1))
        sizes.append((n, e))
    sizes = sizes[:count]
    rng.shuffle(sizes)
    return [{"nodes": rng.integers(0, 5, n).astype(np.int32), "edges": rng.normal(size=(e, 4)).astype(np.float32),
             "senders": rng.integers(0, n, e).astype(np.int32), "receivers": rng.integers(0, n, e).astype(np.int32)}
            for n, e in sizes]


def one(gr: dict) -> jraph.GraphsTuple:
    """The graph ALONE, as the one-graph function sees it."""
    n, e = len(gr["nodes"]), len(gr["senders"])
    return jraph.GraphsTuple(nodes=jnp.asarray(gr["nodes"]), edges=jnp.asarray(gr["edges"]),
                             senders=jnp.asarray(gr["senders"]), receivers=jnp.asarray(gr["receivers"]),
                             n_node=jnp.array([n], jnp.int32), n_edge=jnp.array([e], jnp.int32), globals=None)


def params(rng) -> dict:
    """Parameters the cases use: an embedding, a square matrix, a vector, a vector with EXACT zeros
    (relu at 0), and a matrix 29 wide (a width that was a probe size once)."""
    z = rng.normal(size=F).astype(np.float32)
    z[0] = 0.0
    return {"emb": jnp.asarray(rng.normal(size=(5, F)), jnp.float32),
            "W": jnp.asarray(rng.normal(size=(F, F)) / 2, jnp.float32),
            "v": jnp.asarray(rng.normal(size=F), jnp.float32), "z": jnp.asarray(z),
            "W29": jnp.asarray(rng.normal(size=(F, 29)) / 3, jnp.float32), "ones": jnp.ones(5, jnp.float32)}


def rel(a, b) -> float:
    """Largest difference relative to the reference's largest magnitude, or to ATOL / RTOL when that
    is smaller (so a difference below ATOL always passes); NaN where both are NaN: equal."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if not a.size:
        return 0.0
    both = np.isnan(a) & np.isnan(b)
    d = np.where(both, 0.0, np.abs(a - b))
    if np.isnan(d).any():
        return float("inf")
    scale = max(float(np.max(np.abs(np.where(both, 0.0, b)))), ATOL / RTOL)
    return float(d.max() / scale)


def compare(fn, p, grs: list[dict], pad: tuple = (2, 3), seed: int = 0, empty: int = 0) -> tuple[str, str]:
    """``("exact", "")`` when ``fn`` on the union gives each graph's own value and the gradient of
    a random positive weighting equals each graph's alone (within :data:`RTOL`); ``("refused",
    reason)`` when ragged mode refuses it. Any other outcome fails (AssertionError) or raises.
    ``empty``: that many EMPTY graph slots after the padding graph, real graphs marked by a mask
    (the layout of a run's batches: zero-feature padding edges on the padding graph's hub)."""
    u, n_graph = union_of(grs, n_pad_nodes=pad[0], n_pad_edges=pad[1])
    if empty:
        from gnn_batching.ragged import from_batch

        u = u._replace(n_node=jnp.concatenate([u.n_node, jnp.zeros(empty, jnp.int32)]),
                       n_edge=jnp.concatenate([u.n_edge, jnp.zeros(empty, jnp.int32)]))
        u, n_graph = from_batch(u, np.arange(n_graph + empty) < len(grs))
    k = len(grs)
    w = jnp.asarray(np.random.default_rng(seed).uniform(0.5, 1.5, k), jnp.float32)

    def on_union(q):
        vals = ragged_loss(fn, q, u, n_graph)
        return jnp.sum(w * vals[:k]), vals

    def alone(q):
        vals = jnp.stack([jnp.asarray(fn(q, one(gr)), jnp.float32) for gr in grs])
        return jnp.sum(w * vals), vals

    try:
        (_, vu), gu = jax.jit(jax.value_and_grad(on_union, has_aux=True))(p)
    except Refused as exc:
        return "refused", str(exc)
    (_, va), ga = jax.jit(jax.value_and_grad(alone, has_aux=True))(p)
    vu = np.asarray(vu)
    assert not np.isnan(vu[k:]).any(), f"a padding slot is NaN (a 0/0 there reaches the gradient): {vu[k:]}"
    d = rel(vu[:k], va)
    assert d <= RTOL, f"values differ by {d:.3g}: {vu[:k]} vs {np.asarray(va)}"
    for name, x, y in zip(sorted(p), [gu[q] for q in sorted(p)], [ga[q] for q in sorted(p)]):
        d = rel(x, y)
        assert d <= RTOL, f"gradient of {name} differs by {d:.3g}"
        assert np.isfinite(np.asarray(x)).all() == np.isfinite(np.asarray(y)).all(), f"non-finite gradient {name}"
    return "exact", ""
