"""gnn_batching.dynamically_batch gives jraph.dynamically_batch's batches, arrays, dtypes and errors."""

from __future__ import annotations

import jraph
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import tree_util

import gnn_batching


def _graph(rng, n_graphs, nodes_per, edges_per, with_globals):
    n = np.array(nodes_per[:n_graphs], dtype=np.int32)
    e = np.array(edges_per[:n_graphs], dtype=np.int32)
    tn, te = int(n.sum()), int(e.sum())
    return jraph.GraphsTuple(
        n_node=n, n_edge=e,
        nodes={"x": rng.normal(size=(tn, 2)).astype(np.float32), "z": rng.integers(0, 9, tn)},
        edges=rng.normal(size=(te,)).astype(np.float32),
        senders=rng.integers(0, max(tn, 1), te).astype(np.int32),
        receivers=rng.integers(0, max(tn, 1), te).astype(np.int32),
        globals=rng.normal(size=(n_graphs, 3)) if with_globals else None,
    )


def _same(a, b):
    la, ta = tree_util.tree_flatten(a._asdict())
    lb, tb = tree_util.tree_flatten(b._asdict())
    assert ta == tb
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


elements = st.lists(
    st.tuples(st.integers(1, 2), st.lists(st.integers(1, 9), min_size=2, max_size=2),
              st.lists(st.integers(0, 15), min_size=2, max_size=2)),
    min_size=0, max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(elements=elements, n_node=st.integers(2, 40), n_edge=st.integers(0, 50), n_graph=st.integers(2, 8),
       with_globals=st.booleans(), seed=st.integers(0, 5))
def test_same_batches_and_errors_as_jraph(elements, n_node, n_edge, n_graph, with_globals, seed):
    rng = np.random.default_rng(seed)
    graphs = [_graph(rng, k, n, e, with_globals) for k, n, e in elements]
    ref, ref_err = [], None
    try:
        for b in jraph.dynamically_batch(iter(graphs), n_node, n_edge, n_graph):
            ref.append(b)
    except RuntimeError as exc:
        ref_err = str(exc)
    ours, our_err = [], None
    try:
        for b in gnn_batching.dynamically_batch(iter(graphs), n_node, n_edge, n_graph):
            ours.append(b)
    except RuntimeError as exc:
        our_err = str(exc)
    assert our_err == ref_err
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        _same(a, b)


def test_n_graph_below_two_is_a_value_error():
    with pytest.raises(ValueError, match="greater or equal to `2`"):
        list(gnn_batching.dynamically_batch(iter([]), 10, 10, 1))


def test_oversize_flushes_pending_batch_first():
    rng = np.random.default_rng(0)
    graphs = [_graph(rng, 1, [2, 0], [1, 0], False), _graph(rng, 1, [50, 0], [1, 0], False)]
    it = gnn_batching.dynamically_batch(iter(graphs), 10, 10, 4)
    first = next(it)
    assert first.n_node.tolist() == [2, 8, 0, 0]
    with pytest.raises(RuntimeError, match="Found graph bigger than batch size"):
        next(it)
