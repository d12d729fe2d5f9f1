"""The public entry: a one-graph function's per-graph values on a union, and masked losses."""

from __future__ import annotations

from collections import OrderedDict

import jax
import jax.numpy as jnp

from gnn_batching.ragged import calls, rules  # noqa: F401  (they fill the rule tables)
from gnn_batching.ragged.interp import Interp, Struct, V
from gnn_batching.ragged.levels import Refused, Sizes, pretty, strict_sizes, symbolic_sizes
from gnn_batching.ragged.union import Union, as_union, from_batch

_TRACES: OrderedDict = OrderedDict()  # (fn, input specs) -> (closed jaxpr, sizes): one trace per model and dtype
_MAX_TRACES = 32


def _spec_key(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False))) for x in leaves)


def _param_spec(x) -> jax.ShapeDtypeStruct:
    """A parameter's shape, dtype AND weak type, as ``jit`` would trace it: a Python float stays
    weak (``bf16_h * 1.37`` is bf16 alone; traced as a strong float32 it would be float32)."""
    aval = jax.typeof(x)
    return jax.ShapeDtypeStruct(tuple(aval.shape), aval.dtype, weak_type=bool(getattr(aval, "weak_type", False)))


def graph_spec(union: Union, sizes: Sizes):
    """ONE graph's ``GraphsTuple`` of shapes: ``n`` nodes and ``e`` edges (symbolic), the
    union's feature shapes and dtypes."""
    import jraph

    def s(shape, like):
        return jax.ShapeDtypeStruct(shape, like.dtype)

    glob = None if union.globals is None else s((1, *union.globals.shape[1:]), union.globals)
    return jraph.GraphsTuple(nodes=s((sizes.n, *union.nodes.shape[1:]), union.nodes),
                             edges=s((sizes.e, *union.edges.shape[1:]), union.edges),
                             senders=s((sizes.e,), union.senders), receivers=s((sizes.e,), union.receivers),
                             n_node=s((1,), union.n_node), n_edge=s((1,), union.n_edge), globals=glob)


def trace(fn, params, union: Union, per_graph: tuple = ()):
    """``(closed jaxpr, sizes)`` of ``fn(params, graph, *per_graph_rows)`` for ONE graph of
    symbolic size (cached per function and input shapes).

    Raises:
      Refused: the function cannot be traced for every graph size (a Python decision on a size:
        ``if n > 20``, ``min(n, 10)``, ``max(e, 1)``, ``float(n)``; or any other error).
    """
    specs = jax.tree_util.tree_map(_param_spec, params)
    extras = tuple(jax.ShapeDtypeStruct(tuple(x.shape[1:]), x.dtype) for x in per_graph)
    gkey = (tuple(union.nodes.shape[1:]), str(union.nodes.dtype), tuple(union.edges.shape[1:]),
            str(union.edges.dtype), str(union.senders.dtype), str(union.n_node.dtype),
            None if union.globals is None else (tuple(union.globals.shape[1:]), str(union.globals.dtype)))
    try:
        key = (fn, _spec_key(specs), gkey, _spec_key(extras))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _TRACES:
        _TRACES.move_to_end(key)
        return _TRACES[key]
    sizes = symbolic_sizes()
    try:
        with strict_sizes():
            closed = jax.make_jaxpr(fn)(specs, graph_spec(union, sizes), *extras)
    except Refused:
        raise
    except Exception as exc:
        from jax._src.export.shape_poly import InconclusiveDimensionOperation

        first = pretty(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
        if isinstance(exc, InconclusiveDimensionOperation):
            raise Refused(f"ragged: a decision in Python on the graph's size cannot be made for every graph "
                          f"({first}): decide on a traced size instead, s = jnp.asarray(h.shape[0]); jnp.where(s == 1, "
                          "...), jnp.minimum(s, 10) (or use autobatch_mode: vmap)") from None
        raise Refused(f"ragged: the one-graph function cannot be traced for a graph of any size "
                      f"({type(exc).__name__}: {first})") from None
    if key is not None:
        _TRACES[key] = (closed, sizes)
        while len(_TRACES) > _MAX_TRACES:
            _TRACES.popitem(last=False)
    return closed, sizes


def _like_real(x, ip: Interp, level: str):
    """``x`` (node or edge rows) with the padding graphs' rows replaced by a real graph's first
    row: padding computes on data like the real graphs' (a zero-feature padding edge has norm 0,
    whose infinite derivative would put NaN into the gradient through its zero cotangent). Real
    graphs never read another graph's rows, so their values are unchanged."""
    x = jnp.asarray(x)
    if x.shape[0] == 0:
        return x
    row_real = ip.real_rows(level)
    first = jnp.argmax(row_real)  # the first row of a real graph (row 0 when there is none)
    keep = row_real.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x, x[first])


def _inputs(union: Union, ip: Interp) -> tuple[list, list]:
    """The one-graph function's graph inputs on the union (local senders/receivers; a padding
    slot's counts at least 1, as its sizes) and their levels, in the traced argument order."""
    import jraph

    off = ip.offsets["node"][union.edge_gid].astype(union.senders.dtype)
    n_node = ip.size_of("node").astype(union.n_node.dtype)[:, None]
    n_edge = ip.size_of("edge").astype(union.n_edge.dtype)[:, None]
    glob = None if union.globals is None else union.globals[:, None]
    nodes, edges = _like_real(union.nodes, ip, "node"), _like_real(union.edges, ip, "edge")
    graph = jraph.GraphsTuple(nodes=nodes, edges=edges, senders=union.senders - off,
                              receivers=union.receivers - off, n_node=n_node, n_edge=n_edge, globals=glob)
    tags = jraph.GraphsTuple(nodes="node", edges="edge", senders="edge", receivers="edge", n_node="graph",
                             n_edge="graph", globals=None if glob is None else "graph")
    return jax.tree_util.tree_leaves(graph), jax.tree_util.tree_leaves(tags)


def ragged_loss(fn, params, union, n_graph: int, *per_graph: jax.Array) -> jax.Array:
    """``fn(params, graph, *one_graph_values) -> scalar``, written for ONE unpadded graph, on a
    padded disjoint union: one value per graph slot, shape ``(n_graph,)``, differentiable in
    ``params`` (each graph's own value and gradient, the user's derivative rules included).

    Args:
      fn: the one-graph function (plain JAX: ``h[graph.senders]``, ``jax.ops.segment_sum(...,
        num_segments=graph.nodes.shape[0])``, ``jnp.mean(h, axis=0)``, ``h.shape[0] // 2``,
        ``jax.custom_vjp`` rules, ``jax.checkpoint``, ...).
      params: its parameters (a pytree, shared by every graph).
      union: the padded disjoint union: a :class:`~gnn_batching.ragged.Union` or a padded jraph
        ``GraphsTuple`` (what :func:`~gnn_batching.ragged.union_of` returns).
      n_graph: graph slots of the union (real graphs and padding).
      per_graph: values with one row per graph slot (e.g. targets, shape ``(n_graph,)``); ``fn``
        sees one row.

    Every real graph has at least one node: ``fn`` is traced for ``n >= 1`` (so a Python
    ``max(n, 1)`` is decided as ``n``), and a real slot without nodes gets NaN (padding slots may be
    empty). The data pipeline never makes one (an entry without atoms is refused when read).

    Raises:
      Refused: a primitive or pattern whose meaning per graph cannot be proven (named with the
        user's source line), or any error while tracing or interpreting the function.
    """
    u = as_union(union, n_graph)
    try:
        closed, sizes = trace(fn, params, u, per_graph)
        real = u.real if u.real is not None else u.n_node > 0
        struct = Struct(*(jnp.asarray(x, jnp.int32) for x in (u.node_gid, u.edge_gid, u.n_node, u.n_edge)),
                        jnp.asarray(real, bool))
        ip = Interp(struct, n_graph, {"node": u.nodes.shape[0], "edge": u.senders.shape[0]}, sizes)
        graph_vals, graph_levels = _inputs(u, ip)
        flat_params = jax.tree_util.tree_leaves(params)
        args = [V(x, "const") for x in flat_params] + [V(x, lv) for x, lv in zip(graph_vals, graph_levels)]
        args += [V(x, "graph") for x in per_graph]
        outs = ip.run_closed(closed, args)
        if len(outs) != 1 or tuple(closed.out_avals[0].shape) != ():
            raise Refused(f"ragged: the function must return one scalar per graph; it returns "
                          f"{[pretty(tuple(a.shape)) for a in closed.out_avals]}")
        out = outs[0]
        per = jnp.broadcast_to(out.x, (n_graph,)) if out.lv == "const" else out.x  # const: the same for every graph
        # the trace assumed n >= 1 (Python decisions such as max(n, 1) were made so): a real slot
        # without nodes gets NaN, never a value the function would not have given it
        if not jnp.issubdtype(per.dtype, jnp.inexact):
            return per
        return jnp.where(struct.real & (struct.n_node == 0), jnp.asarray(jnp.nan, per.dtype), per)
    except Refused:
        raise
    except Exception as exc:  # never another exception: the caller falls back on a refusal
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise Refused(f"ragged: could not be re-interpreted ({type(exc).__name__}: {pretty(first)})") from exc


def masked_sums(fn):
    """``sums(params, graph, targets, mask) -> (sum, real graphs)``: ``fn(params, one_graph,
    target)`` per graph slot of a padded disjoint-union batch, summed over the REAL graphs
    (``where``, not ``* mask``: a padding slot's NaN never reaches the sum or its gradient)."""

    def sums(params, graph, targets, mask):
        union, n_graph = from_batch(graph, mask)
        per = ragged_loss(fn, params, union, n_graph, targets)
        return jnp.sum(jnp.where(mask, per, 0.0)), jnp.sum(jnp.asarray(mask).astype(per.dtype))

    return sums


def masked_mean_loss(fn):
    """``loss(params, graph, targets, mask)``: ``fn(params, one_graph, target)`` per real graph of
    a padded disjoint-union batch, averaged over the real graphs (padding never counts)."""
    sums = masked_sums(fn)

    def loss(params, graph, targets, mask):
        total, count = sums(params, graph, targets, mask)
        return total / jnp.maximum(count, 1.0)

    return loss
