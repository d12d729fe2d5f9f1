"""Ragged autobatch: a function written for ONE unpadded graph,
re-interpreted on a padded disjoint union.

The user's function ``fn(params, graph) -> scalar`` sees one graph: ``nodes`` (n,), ``edges``
(e, 4), ``senders``/``receivers`` (e,) local indices. It is traced abstractly twice, at two probe
sizes no feature dimension can collide with; every intermediate gets a LEVEL by comparing its
shapes across the traces: ``node`` (leading axis n), ``edge`` (leading axis e), ``graph`` (no
node/edge axis but depends on the graph: one value per graph), ``const`` (parameters only).
Literals that equal n (or e) in both traces are the graph's size (``h.shape[0]``, ``jnp.mean``'s
divisor): on the union they become each graph's own count.

On the union, node- and edge-level values keep their leading axis (N or E), graph-level values
gain a leading axis of graphs (G), and each primitive is rebound by a rule
(:data:`RULES`): elementwise ops unchanged, reductions over the node/edge axis become segment
reductions by graph id, graph-level values broadcast to nodes/edges by gathering with the
node/edge graph ids, gathers and scatters by senders/receivers use the union's global indices.
Anything without a rule is refused, naming the primitive and the user's source line.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as xcore

from gnn_batching.errors import ConfigError

# (nodes, edges) of the abstract traces: primes, unlike feature sizes; the third tells a constant
# that is affine in the node count (jnp.mean's n * f, e + 1) from one affine in the edge count
PROBES = ((11, 29), (17, 43), (23, 31))

ELEMENTWISE = {
    "add", "sub", "mul", "div", "max", "min", "pow", "neg", "exp", "exp2", "log", "log1p", "expm1", "tanh",
    "logistic", "abs", "sqrt", "rsqrt", "square", "integer_pow", "sign", "sin", "cos", "erf", "select_n",
    "convert_element_type", "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not", "stop_gradient", "copy",
    "copy_p", "rem", "floor", "ceil", "round", "is_finite", "atan2", "erf_inv", "nextafter",
}


# primitives that keep the node/edge axis leading (checked per primitive in _Interp._leading)
LEADING = {"split", "gather", "scatter-add", "scatter_add", "scatter-max", "scatter-min", "scatter-mul", "dot_general",
           "slice", "squeeze", "expand_dims", "reshape", "concatenate", "transpose", "dynamic_slice", "pad"}
CALLS = {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "remat", "checkpoint"}


@dataclass(frozen=True)
class Union:
    """The padded disjoint union the function is re-interpreted on."""

    nodes: jax.Array  # (N,)
    edges: jax.Array  # (E, 4)
    senders: jax.Array  # (E,) global
    receivers: jax.Array  # (E,) global
    node_gid: jax.Array  # (N,) graph of each node
    edge_gid: jax.Array  # (E,) graph of each edge
    n_node: jax.Array  # (G,)
    n_edge: jax.Array  # (G,)
    real: jax.Array | None = None  # (G,) bool: the real graphs (default: those with nodes)


class Refused(ConfigError):
    """The function cannot be proven to mean the same on the union."""


def _where(eqn) -> str:
    try:
        from jax._src import source_info_util

        return f" at {source_info_util.summarize(eqn.source_info)}"
    except Exception:  # pragma: no cover - source info is best effort
        return ""


def trace(fn, params, n: int, e: int, extra: tuple = ()):
    """The closed jaxpr of ``fn(params, graph, *extra)`` for a graph of ``n`` nodes and ``e``
    edges; ``extra`` are per-graph values (e.g. the target), given as one graph's shape/dtype."""
    import jraph

    graph = jraph.GraphsTuple(nodes=jax.ShapeDtypeStruct((n,), jnp.int32),
                              edges=jax.ShapeDtypeStruct((e, 4), jnp.float32),
                              senders=jax.ShapeDtypeStruct((e,), jnp.int32),
                              receivers=jax.ShapeDtypeStruct((e,), jnp.int32),
                              n_node=jax.ShapeDtypeStruct((1,), jnp.int32),
                              n_edge=jax.ShapeDtypeStruct((1,), jnp.int32), globals=None)
    return jax.make_jaxpr(fn)(params, graph, *extra)


def _level(shape_a: tuple, shape_b: tuple, graph_dep: bool, where: str, prim: str) -> str:
    (na, ea), (nb, eb) = PROBES[:2]
    if shape_a == shape_b:
        if any(d in (na, ea) for d in shape_a):
            raise Refused(f"ragged: {prim}{where}: a size {shape_a} equals a probe size in both traces; "
                          "cannot tell a feature axis from the graph's")
        return "graph" if graph_dep else "const"
    if len(shape_a) != len(shape_b) or shape_a[1:] != shape_b[1:]:
        raise Refused(f"ragged: {prim}{where}: shape {shape_a} vs {shape_b} across the probes: only the leading "
                      "axis may be the graph's nodes or edges (no reshape merging them, no n x n pairs)")
    if (shape_a[0], shape_b[0]) == (na, nb):
        return "node"
    if (shape_a[0], shape_b[0]) == (ea, eb):
        return "edge"
    raise Refused(f"ragged: {prim}{where}: leading axis {shape_a[0]} vs {shape_b[0]} is neither the nodes "
                  f"({na}, {nb}) nor the edges ({ea}, {eb}): a data-dependent or derived size")


def _affine(values: list, prim: str, where: str) -> tuple[str, float, float]:
    """``(count, a, b)``: the literal is ``a * n + b`` (count ``n``) or ``a * e + b`` across every
    probe, else refused."""
    v = [float(x) for x in values]
    for which, idx in (("n", 0), ("e", 1)):
        xs = [p[idx] for p in PROBES]
        a = (v[1] - v[0]) / (xs[1] - xs[0])
        b = v[0] - a * xs[0]
        if all(abs(a * x + b - y) <= 1e-6 * max(1.0, abs(y)) for x, y in zip(xs, v)):
            return which, a, b
    raise Refused(f"ragged: {prim}{where}: a constant {v} across graph sizes {[p[:2] for p in PROBES]} that is "
                  "not affine in the graph's node or edge count (a data-dependent size?)")


def _lit_value(x):
    if isinstance(x, xcore.Literal):
        v = np.asarray(x.val)
        return v if v.ndim == 0 else None
    return None


class _Interp:
    def __init__(self, u: Union, n_graph: int):
        self.u = u
        self.g = n_graph
        self.real = u.real if u.real is not None else u.n_node > 0

    def count(self, which: str, level: str, dtype) -> jax.Array:
        """Each element's graph's node or edge count, at ``level``. A padding graph's count is at
        least 1, so a mean over an empty slot is 0, not 0/0 (whose NaN would reach the gradient
        through the masked sum); a real graph keeps its own count."""
        c = self.u.n_node if which == "n" else self.u.n_edge
        c = jnp.where(self.real, c, jnp.maximum(c, 1))
        if level == "node":
            c = c[self.u.node_gid]
        elif level == "edge":
            c = c[self.u.edge_gid]
        return c.astype(dtype)

    def union_shape(self, shape: tuple, level: str) -> tuple:
        """A one-graph value's shape on the union, by its level."""
        if level == "node":
            return (self.u.nodes.shape[0],) + shape[1:]
        if level == "edge":
            return (self.u.edges.shape[0],) + shape[1:]
        if level == "graph":
            return (self.g,) + shape
        return shape

    def lift(self, x, level_from: str, level_to: str):
        """A value at ``level_from`` as seen at ``level_to`` (graph-level values gathered by graph id)."""
        if level_from == level_to or level_from == "const":
            return x
        if level_from == "graph" and level_to == "node":
            return x[self.u.node_gid]
        if level_from == "graph" and level_to == "edge":
            return x[self.u.edge_gid]
        raise Refused(f"ragged: a {level_from}-level value used at {level_to} level")

    def run(self, jaxprs: tuple, consts: list, args: list, levels: list) -> tuple[list, list]:
        jaxpr_a = jaxprs[0]
        env, lev = {}, {}
        for v, x, lv in zip(jaxpr_a.invars, args, levels):
            env[v], lev[v] = x, lv
        for v, c in zip(jaxpr_a.constvars, consts):
            env[v], lev[v] = c, "const"
        for eqns in zip(*(j.eqns for j in jaxprs)):
            eqn_a, eqn_b = eqns[0], eqns[1]
            prim = eqn_a.primitive.name
            where = _where(eqn_a)
            if any(e.primitive.name != prim for e in eqns):
                raise Refused(f"ragged: {prim}{where}: the program differs between graph sizes")
            ins, in_levels = [], []
            for vs in zip(*(e.invars for e in eqns)):
                lits = [_lit_value(v) for v in vs]
                if lits[0] is not None:
                    if any(x is None for x in lits):
                        raise Refused(f"ragged: {prim}{where}: a constant in one trace, a value in another")
                    if all(x == lits[0] for x in lits):
                        ins.append(jnp.asarray(lits[0]))
                        in_levels.append("const")
                        continue
                    ins.append(("size", *_affine(lits, prim, where), lits[0].dtype))
                    in_levels.append("size")
                    continue
                ins.append(env[vs[0]])
                in_levels.append(lev[vs[0]])
            graph_dep = any(lv not in ("const",) for lv in in_levels)
            out_levels = [_level(tuple(oa.aval.shape), tuple(ob.aval.shape), graph_dep, where, prim)
                          for oa, ob in zip(eqn_a.outvars, eqn_b.outvars)]
            outs = self.apply(eqns, ins, in_levels, out_levels, where)
            for o, x, lv in zip(eqn_a.outvars, outs, out_levels):
                want = self.union_shape(tuple(o.aval.shape), lv)
                if tuple(x.shape) != want:  # a rule's bug, never the user's: say where
                    raise AssertionError(f"ragged: {prim}{where}: union shape {tuple(x.shape)}, expected {want} "
                                         f"({lv}-level, one-graph shape {tuple(o.aval.shape)})")
                env[o], lev[o] = x, lv
        return [env[v] if not isinstance(v, xcore.Literal) else jnp.asarray(v.val) for v in jaxpr_a.outvars], \
            [lev.get(v, "const") for v in jaxpr_a.outvars]

    def apply(self, eqns, ins, in_levels, out_levels, where):
        eqn_a = eqns[0]
        prim = eqn_a.primitive.name
        out = out_levels[0]
        if all(lv == "const" for lv in [*in_levels, *out_levels]):  # parameters only (iota, weights): as traced
            return _bind(eqn_a, ins)
        sizes = [isinstance(x, tuple) and x[0] == "size" for x in ins]
        ins = [self.count(x[1], out, x[4]) * x[2] + x[3] if s else x for x, s in zip(ins, sizes)]
        ins = [x.astype(v.aval.dtype) if s else x for x, s, v in zip(ins, sizes, eqn_a.invars)]
        in_levels = [out if lv == "size" else lv for lv in in_levels]
        if prim in ELEMENTWISE:
            out_rank = len(eqn_a.outvars[0].aval.shape)
            lifted = []
            for x, lv, v in zip(ins, in_levels, eqn_a.invars):
                one = tuple(v.aval.shape)
                y = self.lift(x, lv, out)
                if lv == "graph" and out in ("node", "edge") and len(one) == out_rank and out_rank and one[0] == 1:
                    y = y.reshape((y.shape[0],) + one[1:])  # (1, f) broadcast along the nodes: (N, f)
                lifted.append(y)
            ins = lifted
            # a per-element value of lower rank (a count, a rank-0 per-graph scalar) lines up with
            # the leading axis; parameters and literals broadcast from the right, as in the trace
            rank = max(x.ndim for x in ins)
            ins = [x.reshape(x.shape + (1,) * (rank - x.ndim)) if lv != "const" else x
                   for x, lv in zip(ins, in_levels)]
            shape = np.broadcast_shapes(*(x.shape for x in ins))
            ins = [jnp.broadcast_to(x, shape) if x.shape != shape else x for x in ins]
            return _bind(eqn_a, ins)
        if prim in CALLS:
            key = next(k for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn_a.params)
            inner = [e.params[key] for e in eqns]
            jaxprs = tuple(j.jaxpr if hasattr(j, "jaxpr") else j for j in inner)
            consts = inner[0].consts if hasattr(inner[0], "consts") else []
            outs, _ = self.run(jaxprs, consts, ins, in_levels)
            return outs
        if prim == "broadcast_in_dim":
            return [self._broadcast(eqn_a, ins[0], in_levels[0], out, where)]
        if prim in ("reduce_sum", "reduce_max", "reduce_min"):
            return [self._reduce(eqn_a, ins[0], in_levels[0], out, where)]
        if prim in LEADING:
            return self._leading(eqn_a, ins, in_levels, out, where)
        raise Refused(f"ragged: {prim}{where}: no rule for this primitive on a disjoint union")

    def _broadcast(self, eqn, x, lv, out, where):
        shape = tuple(eqn.params["shape"])
        dims = tuple(eqn.params["broadcast_dimensions"])
        lead = {"node": self.u.nodes.shape[0], "edge": self.u.edges.shape[0], "graph": self.g}
        if out == "const":
            return jax.lax.broadcast_in_dim(x, shape, dims)
        if lv in ("node", "edge") and out == lv:
            return jax.lax.broadcast_in_dim(x, (lead[out],) + shape[1:], dims)
        if out == "graph":  # const or graph-level operand -> one value per graph
            if lv == "const":
                return jax.lax.broadcast_in_dim(x, (self.g,) + shape, tuple(d + 1 for d in dims))
            return jax.lax.broadcast_in_dim(x, (self.g,) + shape, (0,) + tuple(d + 1 for d in dims))
        if lv == "const":  # e.g. zeros((n, f)): the node/edge axis is new
            return jax.lax.broadcast_in_dim(x, (lead[out],) + shape[1:], dims)
        if lv == "graph":  # a per-graph value broadcast over the graph's nodes/edges
            if 0 in dims:
                raise Refused(f"ragged: broadcast_in_dim{where}: a per-graph value placed on the node axis")
            g = self.lift(x, "graph", out)
            return jax.lax.broadcast_in_dim(g, (lead[out],) + shape[1:], (0,) + dims)
        raise Refused(f"ragged: broadcast_in_dim{where}: a {lv}-level value broadcast to {out} level")

    def _reduce(self, eqn, x, lv, out, where):
        axes = tuple(eqn.params["axes"])
        name = eqn.primitive.name
        if lv == "const":
            return _bind(eqn, [x])[0]
        if lv == "graph":
            red = {"reduce_sum": jnp.sum, "reduce_max": jnp.max, "reduce_min": jnp.min}[name]
            return red(x, axis=tuple(a + 1 for a in axes))
        if 0 not in axes:
            return _bind(eqn, [x])[0]
        seg = {"reduce_sum": jax.ops.segment_sum, "reduce_max": jax.ops.segment_max,
               "reduce_min": jax.ops.segment_min}[name]
        gid = self.u.node_gid if lv == "node" else self.u.edge_gid
        y = seg(x, gid, num_segments=self.g)
        if name != "reduce_sum":  # an empty padding graph's max is -inf: 0 keeps its gradient finite
            y = jnp.where(self.real.reshape((-1,) + (1,) * (y.ndim - 1)), y, 0)
        rest = tuple(a for a in axes if a != 0)
        return jnp.sum(y, axis=rest) if rest and name == "reduce_sum" else (
            {"reduce_max": jnp.max, "reduce_min": jnp.min}[name](y, axis=rest) if rest else y)

    def _per_graph(self, eqn, ins, in_levels, where):
        """A shape primitive on per-graph values: the union's leading axis of graphs is added to
        its axes (parameters in ``dot_general``'s right operand; others are refused)."""
        prim = eqn.primitive.name
        p = dict(eqn.params)
        x = ins[0]
        if any(lv in ("node", "edge") for lv in in_levels):
            raise Refused(f"ragged: {prim}{where}: mixes per-graph and per-node/edge values")
        if prim == "squeeze":
            return jax.lax.squeeze(x, tuple(d + 1 for d in p["dimensions"]))
        if prim == "expand_dims":
            return jnp.expand_dims(x, tuple(d + 1 for d in p["dimensions"]))
        if prim == "reshape":
            return jnp.reshape(x, (self.g, *p["new_sizes"]))
        if prim == "slice":
            strides = p["strides"] or (1,) * len(p["start_indices"])
            return jax.lax.slice(x, (0, *p["start_indices"]), (self.g, *p["limit_indices"]), (1, *strides))
        if prim == "transpose":
            return jnp.transpose(x, (0, *(d + 1 for d in p["permutation"])))
        if prim == "concatenate":
            parts = [y if lv == "graph" else jnp.broadcast_to(y, (self.g, *y.shape)) for y, lv in zip(ins, in_levels)]
            return jnp.concatenate(parts, axis=p["dimension"] + 1)
        if prim == "dot_general" and in_levels[1] == "const":
            (lc, rc), (lb, rb) = p["dimension_numbers"]
            if lb or rb:
                raise Refused(f"ragged: dot_general{where}: batch dimensions on a per-graph value")
            return jax.lax.dot_general(x, ins[1], ((tuple(d + 1 for d in lc), tuple(rc)), ((), ())),
                                       preferred_element_type=p.get("preferred_element_type"))
        raise Refused(f"ragged: {prim}{where}: on a per-graph value (no rule yet)")

    def _leading(self, eqn, ins, in_levels, out, where):
        """Primitives that keep the node/edge axis leading and never touch it: rebound on the
        union's shapes (gathers and scatters by the global senders/receivers included)."""
        prim = eqn.primitive.name
        if "graph" in in_levels or out == "graph":
            return [self._per_graph(eqn, ins, in_levels, where)]
        params = dict(eqn.params)
        lead = {"node": self.u.nodes.shape[0], "edge": self.u.edges.shape[0]}
        if prim == "slice":
            if in_levels[0] in lead and (params["start_indices"][0] != 0 or params["limit_indices"][0]
                                         != eqn.invars[0].aval.shape[0]):
                raise Refused(f"ragged: slice{where}: slicing the node/edge axis (a position in the graph)")
            if in_levels[0] in lead:
                params["limit_indices"] = (lead[in_levels[0]],) + tuple(params["limit_indices"][1:])
        if prim == "reshape":
            if out in lead:
                params["new_sizes"] = (lead[out],) + tuple(params["new_sizes"][1:])
        if prim == "dot_general":
            (lc, _), (lb, _) = params["dimension_numbers"]
            if (in_levels[0] in lead and (0 in lc or 0 in lb)) or in_levels[1] in lead:
                raise Refused(f"ragged: dot_general{where}: contracts or trails the node/edge axis")
        if prim == "split" and params["axis"] % max(len(eqn.invars[0].aval.shape), 1) == 0 and out in lead:
            raise Refused(f"ragged: split{where}: along the node/edge axis")
        if prim == "concatenate" and params["dimension"] == 0 and out in lead:
            raise Refused(f"ragged: concatenate{where}: along the node/edge axis")
        if prim == "transpose" and out in lead and params["permutation"][0] != 0:
            raise Refused(f"ragged: transpose{where}: moves the node/edge axis")
        return eqn.primitive.bind(*ins, **params) if eqn.primitive.multiple_results else \
            [eqn.primitive.bind(*ins, **params)]


def _bind(eqn, ins):
    out = eqn.primitive.bind(*ins, **eqn.params)
    return list(out) if eqn.primitive.multiple_results else [out]


def ragged_loss(fn, params, union: Union, n_graph: int, *per_graph: jax.Array) -> jax.Array:
    """``fn(params, graph, *one_graph_values) -> scalar``, written for ONE unpadded graph,
    re-interpreted on ``union``: one value per graph slot, shape ``(n_graph,)``.

    Args:
      fn: the one-graph function (plain JAX: ``h[graph.senders]``, ``jax.ops.segment_sum(...,
        num_segments=graph.nodes.shape[0])``, ``jnp.mean(h, axis=0)``, ``h.shape[0]``, ...).
      params: its parameters (a pytree, shared by every graph).
      union: the padded disjoint union.
      n_graph: graph slots of the union (real graphs and padding).
      per_graph: values with one row per graph slot (e.g. targets, shape ``(n_graph,)``); ``fn``
        sees one row.

    Raises:
      Refused: a primitive or pattern without a rule, named with the user's source line.
    """
    import jraph

    one = tuple(jax.ShapeDtypeStruct(x.shape[1:], x.dtype) for x in per_graph)
    closed = [trace(fn, params, n, e, one) for n, e in PROBES]
    flat_params, _ = jax.tree_util.tree_flatten(params)
    graph = jraph.GraphsTuple(nodes=union.nodes, edges=union.edges, senders=union.senders,
                              receivers=union.receivers, n_node=union.n_node[:, None], n_edge=union.n_edge[:, None],
                              globals=None)
    tags = jraph.GraphsTuple(nodes="node", edges="edge", senders="edge", receivers="edge", n_node="graph",
                             n_edge="graph", globals=None)
    args = [*flat_params, *jax.tree_util.tree_leaves(graph), *per_graph]  # the traced function's argument order
    levels = ["const"] * len(flat_params) + list(jax.tree_util.tree_leaves(tags)) + ["graph"] * len(per_graph)
    outs, out_levels = _Interp(union, n_graph).run(tuple(c.jaxpr for c in closed), closed[0].consts, args, levels)
    if len(outs) != 1 or out_levels[0] != "graph" or outs[0].shape != (n_graph,):
        raise Refused(f"ragged: the function must return one scalar per graph; got level {out_levels} "
                      f"shapes {[getattr(o, 'shape', None) for o in outs]}")
    return outs[0]


def from_batch(graph, mask=None) -> tuple[Union, int]:
    """The :class:`Union` of a padded jraph ``GraphsTuple`` (any disjoint-union method's batch):
    graph ids of nodes and edges from ``n_node`` / ``n_edge``; ``mask`` (one bool per graph slot)
    marks the real graphs (default: those with nodes). Jit-compatible (static shapes)."""
    graph = jax.tree_util.tree_map(jnp.asarray, graph)  # host (NumPy) batches as well as traced ones
    n_graph = graph.n_node.shape[0]
    ids = jnp.arange(n_graph)
    node_gid = jnp.repeat(ids, graph.n_node, total_repeat_length=graph.nodes.shape[0])
    edge_gid = jnp.repeat(ids, graph.n_edge, total_repeat_length=graph.senders.shape[0])
    real = None if mask is None else jnp.asarray(mask, bool)
    return Union(graph.nodes, graph.edges, graph.senders, graph.receivers, node_gid, edge_gid, graph.n_node,
                 graph.n_edge, real), n_graph


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


def union_of(graphs: list, n_pad_nodes: int = 1, n_pad_edges: int = 0) -> tuple[Union, int]:
    """A padded disjoint union of unpadded one-graph dicts (``nodes``, ``edges``, ``senders``,
    ``receivers``): real graphs first, then one padding graph of ``n_pad_nodes`` nodes and
    ``n_pad_edges`` self-loops on its first node. For tests and examples."""
    nodes, edges, snd, rcv, gid_n, gid_e, nn, ne = [], [], [], [], [], [], [], []
    off = 0
    for g, gr in enumerate(graphs):
        n, e = len(gr["nodes"]), len(gr["senders"])
        nodes.append(np.asarray(gr["nodes"]))
        edges.append(np.asarray(gr["edges"]).reshape(e, 4))
        snd.append(np.asarray(gr["senders"]) + off)
        rcv.append(np.asarray(gr["receivers"]) + off)
        gid_n.append(np.full(n, g))
        gid_e.append(np.full(e, g))
        nn.append(n)
        ne.append(e)
        off += n
    g = len(graphs)
    nodes.append(np.zeros(n_pad_nodes, np.int32))
    edges.append(np.zeros((n_pad_edges, 4), np.float32))
    snd.append(np.full(n_pad_edges, off))
    rcv.append(np.full(n_pad_edges, off))
    gid_n.append(np.full(n_pad_nodes, g))
    gid_e.append(np.full(n_pad_edges, g))
    nn.append(n_pad_nodes)
    ne.append(n_pad_edges)
    cat = np.concatenate
    u = Union(jnp.asarray(cat(nodes), jnp.int32), jnp.asarray(cat(edges), jnp.float32),
              jnp.asarray(cat(snd), jnp.int32), jnp.asarray(cat(rcv), jnp.int32), jnp.asarray(cat(gid_n), jnp.int32),
              jnp.asarray(cat(gid_e), jnp.int32), jnp.asarray(nn, jnp.int32), jnp.asarray(ne, jnp.int32),
              jnp.asarray([True] * g + [False]))
    return u, g + 1


__all__ = ["PROBES", "Refused", "Union", "from_batch", "masked_mean_loss", "masked_sums", "ragged_loss", "trace",
           "union_of"]
