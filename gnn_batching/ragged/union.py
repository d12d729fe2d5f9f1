"""The padded disjoint union a one-graph function is re-interpreted on: which graph each node
and edge belongs to, each graph's first node/edge, its counts, and which graph slots are real."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Union:
    """A padded disjoint union of graphs: the arrays a one-graph function reads, plus the
    structure that says which graph every node and edge belongs to.

    ``senders`` and ``receivers`` are GLOBAL (positions in the union), as in a jraph batch; the
    interpreter turns them into each graph's local positions, the values a one-graph function sees.
    """

    nodes: jax.Array  # (N, ...)
    edges: jax.Array  # (E, ...)
    senders: jax.Array  # (E,) global
    receivers: jax.Array  # (E,) global
    node_gid: jax.Array  # (N,) graph of each node (ascending)
    edge_gid: jax.Array  # (E,) graph of each edge (ascending)
    n_node: jax.Array  # (G,)
    n_edge: jax.Array  # (G,)
    real: jax.Array | None = None  # (G,) bool: the real graphs (default: those with nodes)
    globals: jax.Array | None = None  # (G, ...) per-graph globals, if the batch has them


def from_batch(graph, mask=None) -> tuple[Union, int]:
    """The :class:`Union` of a padded jraph ``GraphsTuple`` (any disjoint-union method's batch):
    graph ids of nodes and edges from ``n_node`` / ``n_edge``; ``mask`` (one bool per graph slot)
    marks the real graphs (default: those with nodes); a real graph has at least one node (a NumPy
    batch that marks an empty slot real is refused; see :func:`~gnn_batching.ragged.ragged_loss`
    for a traced one). Jit-compatible (static shapes); a host
    (NumPy) batch gets its structure from NumPy, without dispatching device ops."""
    if all(isinstance(x, np.ndarray) for x in (graph.n_node, graph.n_edge, graph.nodes, graph.senders)):
        n_node, n_edge = np.asarray(graph.n_node), np.asarray(graph.n_edge)
        n_graph = n_node.shape[0]
        ids = np.arange(n_graph, dtype=np.int32)
        node_gid = np.repeat(ids, n_node)[: graph.nodes.shape[0]]
        node_gid = np.pad(node_gid, (0, graph.nodes.shape[0] - len(node_gid)), constant_values=n_graph - 1)
        edge_gid = np.repeat(ids, n_edge)[: graph.senders.shape[0]]
        edge_gid = np.pad(edge_gid, (0, graph.senders.shape[0] - len(edge_gid)), constant_values=n_graph - 1)
        real = None if mask is None else np.asarray(mask, bool)
        empty = np.flatnonzero(real & (n_node == 0)) if real is not None else []
        if len(empty):
            raise ValueError(f"ragged: graph slot(s) {empty.tolist()} are marked real but have no nodes; a one-graph "
                             "function is traced for n >= 1 nodes (mark them padding)")
        return Union(graph.nodes, graph.edges, graph.senders, graph.receivers, node_gid, edge_gid, n_node, n_edge,
                     real, graph.globals), n_graph
    graph = jax.tree_util.tree_map(jnp.asarray, graph)  # traced batches and device arrays
    n_graph = graph.n_node.shape[0]
    ids = jnp.arange(n_graph)
    node_gid = jnp.repeat(ids, graph.n_node, total_repeat_length=graph.nodes.shape[0])
    edge_gid = jnp.repeat(ids, graph.n_edge, total_repeat_length=graph.senders.shape[0])
    real = None if mask is None else jnp.asarray(mask, bool)
    return Union(graph.nodes, graph.edges, graph.senders, graph.receivers, node_gid, edge_gid, graph.n_node,
                 graph.n_edge, real, graph.globals), n_graph


def as_union(union, n_graph: int) -> Union:
    """``union`` as a :class:`Union`: itself, or the union of a padded jraph ``GraphsTuple``
    (what :func:`union_of` returns), whose LAST graph slot is padding (jraph's convention,
    ``jraph.get_graph_padding_mask``); ``n_graph`` must be its number of graph slots."""
    if isinstance(union, Union):
        return union
    u, g = from_batch(union, np.arange(n_graph) < n_graph - 1)
    if g != n_graph:
        raise ValueError(f"ragged: n_graph {n_graph} but the batch has {g} graph slots")
    return u


def union_of(graphs: list, n_pad_nodes: int = 1, n_pad_edges: int = 0):
    """A padded disjoint union of unpadded one-graph dicts (``nodes``, ``edges``, ``senders``,
    ``receivers``; local indices): real graphs first, then one padding graph of ``n_pad_nodes``
    nodes and ``n_pad_edges`` self-loops on its first node. For tests and examples.

    Returns:
      ``(union, n_graph)``: a jraph ``GraphsTuple`` (global senders/receivers, ``n_node`` and
      ``n_edge`` per graph slot, the padding graph last) and its number of graph slots, the
      arguments :func:`gnn_batching.ragged.ragged_loss` takes.
    """
    import jraph

    nodes, edges, snd, rcv, nn, ne = [], [], [], [], [], []
    off = 0
    feat = None
    for gr in graphs:
        n, e = len(gr["nodes"]), len(gr["senders"])
        nodes.append(np.asarray(gr["nodes"]))
        ed = np.asarray(gr["edges"], np.float32)
        feat = ed.shape[1:] if ed.ndim > 1 else (4,)
        edges.append(ed.reshape((e, *feat)))
        snd.append(np.asarray(gr["senders"], np.int64) + off)
        rcv.append(np.asarray(gr["receivers"], np.int64) + off)
        nn.append(n)
        ne.append(e)
        off += n
    feat = feat or (4,)
    node_tail = nodes[0].shape[1:] if nodes else ()
    node_dtype = nodes[0].dtype if nodes else np.int32
    nodes.append(np.zeros((n_pad_nodes, *node_tail), node_dtype))
    edges.append(np.zeros((n_pad_edges, *feat), np.float32))
    snd.append(np.full(n_pad_edges, off))
    rcv.append(np.full(n_pad_edges, off))
    nn.append(n_pad_nodes)
    ne.append(n_pad_edges)
    cat = np.concatenate
    node_arr = cat(nodes)
    node_arr = node_arr.astype(np.int32) if np.issubdtype(node_arr.dtype, np.integer) else node_arr
    graph = jraph.GraphsTuple(nodes=jnp.asarray(node_arr), edges=jnp.asarray(cat(edges), jnp.float32),
                              senders=jnp.asarray(cat(snd), jnp.int32), receivers=jnp.asarray(cat(rcv), jnp.int32),
                              n_node=jnp.asarray(nn, jnp.int32), n_edge=jnp.asarray(ne, jnp.int32), globals=None)
    return graph, len(graphs) + 1


def one_graph(graph, i: int):
    """Graph slot ``i`` of a padded disjoint-union ``GraphsTuple`` as ONE unpadded graph (host
    NumPy arrays, local senders/receivers): what a one-graph function sees for it."""
    import jraph

    n_node, n_edge = np.asarray(graph.n_node), np.asarray(graph.n_edge)
    n0, e0 = int(n_node[:i].sum()), int(n_edge[:i].sum())
    n, e = int(n_node[i]), int(n_edge[i])
    glob = None if graph.globals is None else np.asarray(graph.globals)[i : i + 1]
    return jraph.GraphsTuple(nodes=np.asarray(graph.nodes)[n0 : n0 + n], edges=np.asarray(graph.edges)[e0 : e0 + e],
                             senders=np.asarray(graph.senders)[e0 : e0 + e] - n0,
                             receivers=np.asarray(graph.receivers)[e0 : e0 + e] - n0,
                             n_node=np.array([n], n_node.dtype), n_edge=np.array([e], n_edge.dtype), globals=glob)
