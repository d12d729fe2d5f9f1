"""What each primitive means per graph on the union (non-call primitives).

A rule takes the interpreter, the one-graph equation, its inputs on the union (values and
levels) and the levels of its outputs, and returns the union arrays of the outputs. The cases:

* ROW-WISE along the node/edge axis (elementwise maths, a matmul with parameters, reshapes,
  slices, sorts and scans over feature axes, ...): the same primitive on the union's rows, the
  graph's size in its parameters replaced by the union's.
* ACROSS a graph's rows (a reduction over the node axis, a gather or scatter by node position, a
  cumulative sum along the nodes, a slice that picks a node, a matmul contracting the nodes): a
  segment operation by graph id, or positions made global with the graph's own offset and bounds.
* PER GRAPH (values without a node/edge axis): the primitive under ``jax.vmap`` over the graph
  slots, parameter-only operands shared.

Anything else is refused by the rule (naming what it cannot prove), never passed through.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from gnn_batching.ragged.interp import NE, Interp, V, bind
from gnn_batching.ragged.levels import is_symbolic, same_dim, substitute
from gnn_batching.ragged.table import RULES

ELEMENTWISE = {
    "abs", "acos", "acosh", "add", "add_any", "and", "asin", "asinh", "atan", "atan2", "atanh", "bessel_i0e",
    "bessel_i1e", "cbrt", "ceil", "clamp", "clz", "complex", "conj", "convert_element_type", "copy", "copy_p", "cos",
    "cosh", "digamma", "div", "eq", "erf", "erf_inv", "erfc", "exp", "exp2", "expm1", "floor", "ge", "gt", "igamma",
    "igamma_grad_a", "igammac", "imag", "integer_pow", "is_finite", "le", "lgamma", "log", "log1p", "logistic", "lt",
    "max", "min", "mul", "ne", "neg", "nextafter", "not", "or", "polygamma", "population_count", "pow", "real",
    "reduce_precision", "regularized_incomplete_beta", "rem", "round", "rsqrt", "select_n", "shift_left",
    "shift_right_arithmetic", "shift_right_logical", "sign", "sin", "sinh", "sqrt", "square", "stop_gradient", "sub",
    "tan", "tanh", "xor", "zeta",
}

Rule = Callable[[Interp, object, list, list], list]


def rule(*names: str):
    """Registers a rule under primitive ``names``."""

    def deco(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def _shape(v) -> tuple:
    return tuple(v.aval.shape)


def _graph_only(ins: list[V]) -> bool:
    return all(v.lv in ("graph", "const") for v in ins)


def per_graph(ip: Interp, eqn, ins: list[V]) -> list:
    """The primitive on per-graph and parameter-only operands: ``jax.vmap`` over the graph slots."""
    axes = [0 if v.lv == "graph" else None for v in ins]
    if not any(a == 0 for a in axes):  # graph-dependent only through a size in its parameters
        raise ip.refuse("a size of the graph in the parameters of a per-graph value")

    def one(*xs):
        return bind(eqn, list(xs))

    return list(jax.vmap(one, in_axes=axes)(*[v.x for v in ins]))


def _rowwise(ip: Interp, eqn, xs: list, level: str, **updates) -> list:
    """The primitive on the union's rows: its parameters' graph sizes replaced by the union's."""
    params = {k: (substitute(v, ip.sizes, ip.lead) if k not in ("jaxpr", "update_jaxpr", "call_jaxpr") else v)
              for k, v in eqn.params.items()}
    params.update(updates)
    prim = eqn.primitive
    out = prim.bind(*xs, **prim.get_bind_params(params))
    return list(out) if prim.multiple_results else [out]


# ---- elementwise -----------------------------------------------------------------------------
@rule(*ELEMENTWISE)
def elementwise(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Unchanged per element; per-graph operands gathered to their nodes/edges, scalars and size-1
    axes broadcast as in the trace."""
    out = outs[0]
    one = _shape(eqn.outvars[0])
    xs = []
    for i, (v, var) in enumerate(zip(ins, eqn.invars)):
        vs = _shape(var)
        scalar_ok = (i == 0 and eqn.primitive.name == "select_n") or (
            i != 1 and eqn.primitive.name == "clamp")  # a scalar predicate, scalar bounds
        if v.lv == "const" and len(vs) == 0 and scalar_ok:
            xs.append(v.x)
        else:
            xs.append(ip.full(v, out, one, vs))
    return bind(eqn, xs)


@rule("optimization_barrier")
def barrier(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """An identity on every operand."""
    return bind(eqn, [v.x for v in ins])


@rule("dim_as_value")
def dim_as_value(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """A size expression (``e // 2 + 1``, ``max(n - 1, 1)``): evaluated for each graph exactly."""
    return [ip.dim(eqn.params["dim"], eqn.outvars[0].aval.dtype)]


@rule("iota")
def iota(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """``jnp.arange(n)`` along the node axis: each node's position in its own graph."""
    p = eqn.params
    out = outs[0]
    if out not in NE:
        raise ip.refuse("a per-graph iota")
    shape = substitute(tuple(p["shape"]), ip.sizes, ip.lead)
    if p["dimension"] != 0:
        return [lax.broadcasted_iota(p["dtype"], shape, p["dimension"])]
    pos = ip.positions(out).astype(p["dtype"])
    return [jnp.broadcast_to(pos.reshape((-1,) + (1,) * (len(shape) - 1)), shape)]


# ---- shapes ------------------------------------------------------------------------------------
@rule("broadcast_in_dim")
def broadcast_in_dim(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Broadcasting; a per-graph value broadcast over its graph's nodes is gathered to them."""
    x, out = ins[0], outs[0]
    shape, dims = tuple(eqn.params["shape"]), tuple(eqn.params["broadcast_dimensions"])
    one_in = _shape(eqn.invars[0])
    if out == "graph":
        if x.lv == "graph":
            return [lax.broadcast_in_dim(x.x, (ip.g, *shape), (0, *(d + 1 for d in dims)))]
        return [lax.broadcast_in_dim(x.x, (ip.g, *shape), tuple(d + 1 for d in dims))]
    lead = ip.lead[out]
    ushape = (lead, *shape[1:])
    if x.lv == out:
        if not dims or dims[0] != 0:
            raise ip.refuse("the node/edge axis moved by a broadcast")
        return [lax.broadcast_in_dim(x.x, ushape, dims)]
    if x.lv not in ("const", "graph"):
        raise ip.refuse(f"a {x.lv}-level value broadcast to {out} level")
    xx, dd, one = x.x, dims, one_in
    if 0 in dd:  # an operand axis of size 1 broadcast along the nodes: drop it
        k = dd.index(0)
        if one[k] != 1:
            raise ip.refuse("a per-graph axis placed on the node axis")
        squeeze_axis = k + (1 if x.lv == "graph" else 0)
        xx = jnp.squeeze(jnp.asarray(xx), axis=squeeze_axis)
        dd = dd[:k] + dd[k + 1 :]
    if x.lv == "const":
        return [lax.broadcast_in_dim(xx, ushape, dd)]
    lifted = ip.lift(V(xx, "graph"), out)
    return [lax.broadcast_in_dim(lifted, ushape, (0, *dd))]


def _graph_or_rows(ip: Interp, eqn, ins: list[V], outs: list[str], rows_ok: Callable[[], bool], what: str,
                   **updates) -> list:
    """Per-graph operands: vmap; node/edge rows: rebound when ``rows_ok()`` (the primitive leaves
    the node/edge axis alone), else refused with ``what``."""
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    levels = {v.lv for v in ins if v.lv != "const"}
    if len(levels) != 1 or outs[0] not in NE or next(iter(levels)) != outs[0]:
        raise ip.refuse(f"mixes {sorted(levels)} values")
    if not rows_ok():
        raise ip.refuse(what)
    return _rowwise(ip, eqn, [v.x for v in ins], outs[0], **updates)


@rule("reshape")
def reshape(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """A reshape that keeps the node/edge axis leading and whole."""
    p = eqn.params
    one_in = _shape(eqn.invars[0])
    return _graph_or_rows(ip, eqn, ins, outs, lambda: p.get("dimensions") is None and same_dim(
        one_in[0], p["new_sizes"][0]), "a reshape that merges or splits the node/edge axis")


@rule("squeeze")
def squeeze(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Squeezing other axes than the node/edge axis."""
    return _graph_or_rows(ip, eqn, ins, outs, lambda: 0 not in eqn.params["dimensions"], "squeezes the node axis")


@rule("transpose")
def transpose(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """A transpose that keeps the node/edge axis first."""
    return _graph_or_rows(ip, eqn, ins, outs, lambda: eqn.params["permutation"][0] == 0,
                          "moves the node/edge axis")


@rule("rev")
def rev(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Reversing other axes than the node/edge axis."""
    return _graph_or_rows(ip, eqn, ins, outs, lambda: 0 not in eqn.params["dimensions"],
                          "reverses the node/edge axis (a position in the graph)")


@rule("concatenate")
def concatenate(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Concatenating along a feature axis."""
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    out = outs[0]
    if eqn.params["dimension"] == 0 or any(v.lv not in (out,) for v in ins):
        raise ip.refuse("concatenates along the node/edge axis or mixes levels")
    return _rowwise(ip, eqn, [v.x for v in ins], out)


@rule("stack", "tile", "split", "unstack")
def stack_like(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Stacking, tiling and splitting along feature axes."""
    p = eqn.params
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    if any(v.lv != outs[0] for v in ins):
        raise ip.refuse("mixes levels")
    name = eqn.primitive.name
    ok = {"stack": lambda: p["axis"] != 0, "split": lambda: p["axis"] != 0, "unstack": lambda: p["axis"] != 0,
          "tile": lambda: p["reps"][0] == 1}[name]
    if not ok():
        raise ip.refuse("acts along the node/edge axis")
    return _rowwise(ip, eqn, [v.x for v in ins], outs[0])


@rule("pad")
def pad(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Padding other axes than the node/edge axis (with a parameter-only value)."""
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    cfg = eqn.params["padding_config"]
    if ins[1].lv != "const" or tuple(cfg[0]) != (0, 0, 0) or ins[0].lv != outs[0]:
        raise ip.refuse("pads the node/edge axis or with a per-graph value")
    return _rowwise(ip, eqn, [ins[0].x, ins[1].x], outs[0])


@rule("slice")
def slice_(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """A slice: whole along the node/edge axis (row-wise), or a fixed number of nodes picked from
    each graph (``h[0]``, ``h[-1]``): a gather at each graph's own positions."""
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    x = ins[0]
    p = eqn.params
    one_in = _shape(eqn.invars[0])
    start, limit = tuple(p["start_indices"]), tuple(p["limit_indices"])
    strides = tuple(p["strides"] or (1,) * len(start))
    if same_dim(start[0], 0) and same_dim(limit[0], one_in[0]) and strides[0] == 1:
        return _rowwise(ip, eqn, [x.x], outs[0])
    size = limit[0] - start[0]
    if is_symbolic(size) or outs[0] != "graph":
        raise ip.refuse("a slice of the node/edge axis whose length depends on the graph's size")
    first = ip.dim(start[0], jnp.int32)  # (G,) local start
    local = first[:, None] + jnp.arange(0, int(size), strides[0], dtype=jnp.int32)[None, :]
    rows = ip.to_global(local, jnp.arange(ip.g)[:, None], x.lv, clip=True, kind="gather")
    picked = jnp.take(x.x, rows, axis=0)  # (G, k, *rest)
    rest = [slice(s, lim, st) for s, lim, st in zip(start[1:], limit[1:], strides[1:])]
    return [picked[(slice(None), slice(None), *rest)]]


@rule("dynamic_slice")
def dynamic_slice(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """``h[i]`` with a per-graph or parameter-only position: a fixed number of nodes picked from
    each graph, the start clamped into it as ``dynamic_slice`` clamps."""
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    x, starts = ins[0], ins[1:]
    sizes = tuple(eqn.params["slice_sizes"])
    if x.lv not in NE or any(s.lv in NE for s in starts):
        raise ip.refuse("a dynamic slice with per-node positions")
    if same_dim(sizes[0], _shape(eqn.invars[0])[0]):  # the whole node axis: start 0 (clamped)
        if any(s.lv != "const" for s in starts[1:]):
            raise ip.refuse("a per-graph slice of a feature axis")
        zero = jnp.zeros((), jnp.asarray(starts[0].x).dtype)
        return _rowwise(ip, eqn, [x.x, zero, *[s.x for s in starts[1:]]], outs[0])
    if is_symbolic(sizes[0]):
        raise ip.refuse("a slice of the node/edge axis whose length depends on the graph's size")
    k = int(sizes[0])
    s0 = jnp.broadcast_to(jnp.asarray(starts[0].x, jnp.int32), (ip.g,))
    n_g = ip.actual(x.lv).astype(jnp.int32)
    s0 = jnp.clip(s0, 0, jnp.maximum(n_g - k, 0))
    local = s0[:, None] + jnp.arange(k, dtype=jnp.int32)[None, :]
    rows = ip.to_global(local, jnp.arange(ip.g)[:, None], x.lv, clip=True, kind="gather")
    picked = jnp.take(x.x, rows, axis=0)  # (G, k, *rest)
    rest_sizes = sizes[1:]

    def cut(blk, *st):
        return lax.dynamic_slice(blk, (0, *st), (k, *rest_sizes))

    axes = (0, *[0 if s.lv == "graph" else None for s in starts[1:]])
    return [jax.vmap(cut, in_axes=axes)(picked, *[s.x for s in starts[1:]])]


@rule("dynamic_update_slice")
def dynamic_update_slice(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Only on per-graph values."""
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    raise ip.refuse("writes at a position of the node/edge axis")


# ---- reductions --------------------------------------------------------------------------------
SEGMENT = {"reduce_sum": jax.ops.segment_sum, "reduce_max": jax.ops.segment_max,
           "reduce_min": jax.ops.segment_min, "reduce_prod": jax.ops.segment_prod}
REDUCE = {"reduce_sum": jnp.sum, "reduce_max": jnp.max, "reduce_min": jnp.min, "reduce_prod": jnp.prod,
          "reduce_and": jnp.all, "reduce_or": jnp.any}


@rule("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or")
def reduce(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """A reduction over the node/edge axis: a segment reduction by graph id (an empty padding slot
    gives 0 for a max or min: its -inf would reach the gradient); over other axes: row-wise."""
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    x = ins[0]
    axes = tuple(eqn.params["axes"])
    name = eqn.primitive.name
    if 0 not in axes:
        return _rowwise(ip, eqn, [x.x], outs[0])
    gid = ip.gid(x.lv)
    xx = x.x
    rest = tuple(a for a in axes if a != 0)
    dtype = eqn.outvars[0].aval.dtype
    if name in ("reduce_and", "reduce_or"):
        seg = jax.ops.segment_min if name == "reduce_and" else jax.ops.segment_max
        y = seg(xx.astype(jnp.int32), gid, num_segments=ip.g) > 0
        return [REDUCE[name](y, axis=rest).astype(dtype) if rest else y.astype(dtype)]
    if name in ("reduce_max", "reduce_min") and jnp.issubdtype(xx.dtype, jnp.inexact):
        return [_extremum(ip, xx, gid, rest, name).astype(dtype)]
    if name == "reduce_sum" and _low_float(xx.dtype):  # alone, XLA sums 16-bit floats in float32
        xx = xx.astype(jnp.float32)
    y = SEGMENT[name](xx, gid, num_segments=ip.g)
    if name in ("reduce_max", "reduce_min"):  # integers: no gradient; an empty padding slot gives 0
        y = jnp.where(ip.s.real.reshape((-1,) + (1,) * (y.ndim - 1)), y, jnp.zeros((), y.dtype))
    return [REDUCE[name](y, axis=rest).astype(dtype) if rest else y.astype(dtype)]


def _low_float(dtype) -> bool:
    """A floating dtype narrower than 32 bits (bfloat16, float16): sums over a graph's nodes are
    accumulated in float32, as XLA does for one graph's reduction or contraction."""
    return bool(jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32)


def _extremum(ip: Interp, x, gid, rest: tuple, name: str):
    """A max (min) over each graph's rows and the axes ``rest``, with ``reduce_max``'s own
    gradient: shared equally by every element equal to the result (two reductions in a row would
    split it per stage). An empty padding slot gives 0 (its -inf would reach the gradient)."""
    seg = jax.ops.segment_max if name == "reduce_max" else jax.ops.segment_min
    red = jnp.max if name == "reduce_max" else jnp.min
    top = lax.stop_gradient(seg(x, gid, num_segments=ip.g))  # (G, *x.shape[1:])
    if rest:
        top = red(top, axis=rest, keepdims=True)
    real = ip.s.real.reshape((-1,) + (1,) * (top.ndim - 1))
    top = jnp.where(real, top, jnp.zeros((), top.dtype))
    at = x == top[gid]  # the elements that are the result (broadcast over the reduced axes)
    count = jax.ops.segment_sum(jnp.sum(at, axis=rest, keepdims=True, dtype=x.dtype) if rest else at.astype(x.dtype),
                                gid, num_segments=ip.g)
    weight = jnp.where(at, 1.0 / jnp.maximum(count, 1)[gid], 0.0).astype(x.dtype)
    out = _chosen(ip.g, rest, x, weight, gid, top)  # exactly the extremum (even +-inf); reduce_max's gradient
    return jnp.squeeze(out, axis=rest) if rest else out


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _chosen(g: int, rest: tuple, x, weight, gid, top):
    """``top`` (each graph's extremum), with the tangent ``reduce_max`` gives it: the tangents of
    the elements equal to it, averaged (``weight``: 1/count on them, 0 elsewhere). A custom JVP,
    not ``top + (part - stop_gradient(part))``: that is inf - inf = NaN where the extremum is
    infinite (a masked max over no element, an inf in the data)."""
    return top


@_chosen.defjvp
def _chosen_jvp(g, rest, primals, tangents):
    _, weight, gid, top = primals
    share = tangents[0] * weight
    return top, jax.ops.segment_sum(jnp.sum(share, axis=rest, keepdims=True) if rest else share, gid, num_segments=g)


@rule("reduce_xor", "argmax", "argmin")
def reduce_rows_only(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Reductions that are refused across the node/edge axis (a position, or no segment form)."""
    axes = tuple(eqn.params["axes"])
    return _graph_or_rows(ip, eqn, ins, outs, lambda: 0 not in axes,
                          "reduces over the node/edge axis to a position or without a segment form")


CUMULATIVE = {"cumsum": jnp.add, "cumprod": jnp.multiply, "cummax": jnp.maximum, "cummin": jnp.minimum,
              "cumlogsumexp": jnp.logaddexp}


@rule(*CUMULATIVE)
def cumulative(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """A cumulative op along the node/edge axis: a segmented scan that restarts at each graph's
    first (last, reversed) element; along other axes: row-wise."""
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    x = ins[0]
    axis, reverse = eqn.params["axis"], eqn.params["reverse"]
    if axis != 0:
        return _rowwise(ip, eqn, [x.x], outs[0])
    if eqn.primitive.name in ("cummax", "cummin") and jnp.issubdtype(jnp.result_type(x.x), jnp.inexact):
        # values are exact, but JAX shares a tie's derivative by the tree of the scan over the
        # graph's own n elements; the union's scan has another tree, so tied elements' gradients
        # would be shared differently
        raise ip.refuse(f"a floating-point {eqn.primitive.name} along the node/edge axis: where values tie, its "
                        "gradient depends on the scan's tree, which differs on a union")
    pos = ip.positions(x.lv)
    start = pos == (ip.actual(x.lv)[ip.gid(x.lv)] - 1 if reverse else 0)
    flags = start.reshape((-1,) + (1,) * (x.x.ndim - 1))
    op = CUMULATIVE[eqn.primitive.name]

    def combine(a, b):
        fa, va = a
        fb, vb = b
        return fa | fb, jnp.where(fb, vb, op(va, vb))

    _, y = lax.associative_scan(combine, (jnp.broadcast_to(flags, x.x.shape), x.x), reverse=reverse, axis=0)
    return [y]


@rule("sort")
def sort(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Sorting along a feature axis (the node/edge axis: refused, a position in the graph)."""
    return _graph_or_rows(ip, eqn, ins, outs, lambda: eqn.params["dimension"] != 0,
                          "sorts along the node/edge axis (positions in the graph)")


@rule("top_k")
def top_k(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """Top-k along a feature axis."""
    axis = eqn.params.get("axis", len(_shape(eqn.invars[0])) - 1)
    return _graph_or_rows(ip, eqn, ins, outs, lambda: axis % len(_shape(eqn.invars[0])) != 0,
                          "top-k along the node/edge axis (positions in the graph)")


# ---- matmuls -----------------------------------------------------------------------------------
@rule("dot_general")
def dot_general(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """A matmul: row-wise with parameters; between two node/edge values row by row (batched on the
    node axis) or contracted over it (a sum per graph); with a per-graph value gathered to the rows."""
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    x, y = ins
    kw = {k: eqn.params[k] for k in ("precision", "preferred_element_type", "out_sharding") if k in eqn.params}

    def dot(a, b, dn):
        return lax.dot_general_p.bind(a, b, dimension_numbers=dn, **kw)

    if x.lv in NE and y.lv == "const":
        if 0 in lc or 0 in lb:
            raise ip.refuse("contracts the node/edge axis with a parameter")
        return [dot(x.x, y.x, eqn.params["dimension_numbers"])]
    if x.lv == "const" and y.lv in NE:
        if 0 in rc or 0 in rb:
            raise ip.refuse("contracts the node/edge axis with a parameter")
        return [dot(x.x, y.x, eqn.params["dimension_numbers"])]
    if x.lv in NE and y.lv == x.lv:
        if lb[:1] == (0,) and rb[:1] == (0,):  # row by row
            return [dot(x.x, y.x, eqn.params["dimension_numbers"])]
        if 0 in lc and 0 in rc and lc.index(0) == rc.index(0):  # over the nodes: a sum per graph
            k = lc.index(0)
            lc2, rc2 = lc[:k] + lc[k + 1 :], rc[:k] + rc[k + 1 :]
            out_dtype = eqn.outvars[0].aval.dtype
            if _low_float(out_dtype):
                # alone, the dot accumulates a 16-bit contraction in float32 and rounds once; per-row
                # products summed in 16 bits would stall (a 300-node bf16 sum: 160 against 187)
                kw["preferred_element_type"] = jnp.float32
            rows = dot(x.x, y.x, ((lc2, rc2), ((0, *lb), (0, *rb))))
            return [jax.ops.segment_sum(rows, ip.gid(x.lv), num_segments=ip.g).astype(out_dtype)]
        raise ip.refuse("pairs the nodes of a graph with each other")
    if {x.lv, y.lv} <= {"graph", *NE} and "graph" in (x.lv, y.lv) and (x.lv in NE) != (y.lv in NE):
        rows = x.lv if x.lv in NE else y.lv
        if lb or rb or (x.lv in NE and 0 in lc) or (y.lv in NE and 0 in rc):
            raise ip.refuse("contracts or batches the node/edge axis with a per-graph value")
        if x.lv not in NE and len(_shape(eqn.invars[0])) - len(lc) > 0:
            raise ip.refuse("a per-graph value's free axes before the node axis")
        a = x.x if x.lv in NE else ip.lift(x, rows)
        b = y.x if y.lv in NE else ip.lift(y, rows)
        lc2 = tuple(d if x.lv in NE else d + 1 for d in lc)
        rc2 = tuple(d if y.lv in NE else d + 1 for d in rc)
        return [dot(a, b, ((lc2, rc2), ((0,), (0,))))]
    raise ip.refuse(f"a matmul of {x.lv}- and {y.lv}-level values")


# ---- gathers and scatters ----------------------------------------------------------------------
def _clip_mode(mode) -> bool:
    from jax.lax import GatherScatterMode

    return GatherScatterMode.from_any(mode) != GatherScatterMode.FILL_OR_DROP


def _promise_mode(mode) -> bool:
    from jax.lax import GatherScatterMode

    return GatherScatterMode.from_any(mode) == GatherScatterMode.PROMISE_IN_BOUNDS


def _index_rows(ip: Interp, idx: V, one_idx_shape: tuple) -> tuple:
    """An index array on the union with one graph per leading row, and that graph per element."""
    if idx.lv in NE:
        x = idx.x
        return x, ip.graph_index(idx.lv, x.shape)
    x = jnp.broadcast_to(jnp.asarray(idx.x), (ip.g, *one_idx_shape)) if idx.lv == "const" else idx.x
    return x, ip.graph_index("graph", x.shape)


@rule("gather")
def gather(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """``x[idx]`` along the node/edge axis: ``idx`` are positions in each element's own graph
    (made global with its offset, bounds as the one-graph gather: clamped, or filled); along a
    feature axis: row-wise with the same indices for every row; from a parameter: by value."""
    x, idx = ins
    p = eqn.params
    dn, ss = p["dimension_numbers"], tuple(p["slice_sizes"])
    if dn.operand_batching_dims:
        if _graph_only(ins):
            return per_graph(ip, eqn, ins)
        raise ip.refuse("a batched gather on node/edge values")
    one_idx = _shape(eqn.invars[1])
    along0 = tuple(dn.start_index_map) == (0,) and 0 in dn.collapsed_slice_dims
    # clamping modes: positions are clamped here, never out of bounds; fill mode keeps its fill
    if x.lv in NE:
        if along0:
            if 0 in dn.offset_dims:
                raise ip.refuse("a gather whose positions do not lead its result")
            rows, gidx = _index_rows(ip, idx, one_idx)
            local = rows[..., 0].astype(jnp.int32)
            glob = ip.to_global(local, gidx[..., 0], x.lv, _clip_mode(p["mode"]), "gather")[..., None]
            dnu = dn if idx.lv in NE else dn._replace(offset_dims=tuple(d + 1 for d in dn.offset_dims))
            out = bind(eqn, [x.x, glob], dimension_numbers=dnu, indices_are_sorted=False, unique_indices=False)[0]
            if _promise_mode(p["mode"]) and tuple(dnu.offset_dims) != tuple(range(out.ndim - len(dnu.offset_dims),
                                                                                  out.ndim)):
                raise ip.refuse("a gather whose slices are not its trailing axes")
            if _promise_mode(p["mode"]):  # out of bounds: the clamped row's value, but no gradient (XLA's
                # scatter, the gather's transpose, drops out-of-bounds updates)
                size = ip.actual(x.lv)[gidx[..., 0]].astype(jnp.int32)
                inb = (local >= 0) & (local < size)
                inb = inb.reshape(inb.shape + (1,) * (out.ndim - inb.ndim))
                out = jnp.where(inb, out, lax.stop_gradient(out))
            return [out]
        if 0 not in dn.start_index_map and 0 not in dn.collapsed_slice_dims and idx.lv == "const" and \
                same_dim(ss[0], _shape(eqn.invars[0])[0]):
            return _rowwise(ip, eqn, [x.x, idx.x], outs[0])
        raise ip.refuse("a gather by positions that differ per node along a feature axis")
    if x.lv == "graph" and idx.lv in NE and along0:
        s0 = _shape(eqn.invars[0])[0]
        flat = x.x.reshape((ip.g * s0, *x.x.shape[2:]))
        local = idx.x[..., 0].astype(jnp.int32)
        gidx = ip.graph_index(idx.lv, local.shape)
        inb = (local >= 0) & (local < s0)
        if _clip_mode(p["mode"]):
            glob = gidx * s0 + jnp.clip(local, 0, s0 - 1)
        else:
            glob = jnp.where(inb, gidx * s0 + local, ip.g * s0)
        out = bind(eqn, [flat, glob[..., None]], indices_are_sorted=False, unique_indices=False)[0]
        if _promise_mode(p["mode"]):  # as above: the clamped row's value, no gradient out of bounds
            if tuple(dn.offset_dims) != tuple(range(out.ndim - len(dn.offset_dims), out.ndim)):
                raise ip.refuse("a gather whose slices are not its trailing axes")
            out = jnp.where(inb.reshape(inb.shape + (1,) * (out.ndim - inb.ndim)), out, lax.stop_gradient(out))
        return [out]
    if x.lv == "const" and idx.lv in NE:  # a parameter looked up by value (an embedding)
        if 0 in dn.offset_dims:
            raise ip.refuse("a gather whose positions do not lead its result")
        # one graph's positions may be sorted and unique; the union's repeat across graphs (the
        # transpose, a scatter-add, would otherwise be told its indices are unique)
        return bind(eqn, [x.x, idx.x], indices_are_sorted=False, unique_indices=False)
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    raise ip.refuse(f"a gather from a {x.lv}-level value by {idx.lv}-level positions")


@rule("scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter-min", "scatter-max", "scatter-sub")
def scatter(ip: Interp, eqn, ins: list[V], outs: list[str]) -> list:
    """``x.at[idx].add(u)`` / ``segment_sum``: along the node/edge axis ``idx`` are positions in
    each element's own graph (made global; out-of-bounds dropped as the one-graph scatter drops
    them, an empty slot never writes into another graph); into a per-graph or parameter-shaped
    array by per-node positions (``segment_sum(h, species, 5)``): into that graph's own copy."""
    x, idx, upd = ins
    p = eqn.params
    dn = p["dimension_numbers"]
    if dn.operand_batching_dims:
        if _graph_only(ins):
            return per_graph(ip, eqn, ins)
        raise ip.refuse("a batched scatter on node/edge values")
    from jax.lax import GatherScatterMode

    fill = GatherScatterMode.FILL_OR_DROP
    along0 = tuple(dn.scatter_dims_to_operand_dims) == (0,) and 0 in dn.inserted_window_dims
    one_idx, one_upd = _shape(eqn.invars[1]), _shape(eqn.invars[2])
    clip = _clip_mode(p["mode"])
    promise = _promise_mode(p["mode"]) and not _graph_only(ins)
    adds = eqn.primitive.name in ("scatter-add", "scatter_add")
    if promise and not (x.lv in NE and along0 and idx.lv in NE and adds):
        # out of bounds, XLA drops such an update forward, and its gradient reads the clamped row
        # (the transpose is a promised gather); written out below for the common case only
        raise ip.refuse("a scatter with promised bounds (mode='promise_in_bounds') other than an add by node/edge "
                        "positions into node/edge rows; use the default mode (drop) or mode='clip'")
    if x.lv in NE and along0:
        if idx.lv in NE:
            if upd.lv != idx.lv:
                raise ip.refuse("scatter updates at another level than their positions")
            local, gidx = idx.x[..., 0].astype(jnp.int32), ip.graph_index(idx.lv, idx.x.shape[:-1])
            glob = ip.to_global(local, gidx, x.lv, clip and not promise, "scatter")[..., None]
            out = bind(eqn, [x.x, glob, upd.x], mode=fill, indices_are_sorted=False, unique_indices=False)[0]
            if promise:
                out = out + _promised_gradient(ip, eqn, x, local, gidx, upd.x)
            return [out]
        if idx.lv in ("graph", "const") and upd.lv in ("graph", "const"):
            rows, gidx = _index_rows(ip, idx, one_idx)
            u = upd.x if upd.lv == "graph" else jnp.broadcast_to(jnp.asarray(upd.x), (ip.g, *one_upd))
            glob = ip.to_global(rows[..., 0].astype(jnp.int32), gidx[..., 0], x.lv, clip, "scatter")[..., None]
            dnu = dn._replace(update_window_dims=tuple(d + 1 for d in dn.update_window_dims))
            return bind(eqn, [x.x, glob, u], dimension_numbers=dnu, mode=fill, indices_are_sorted=False,
                        unique_indices=False)
        raise ip.refuse(f"a scatter by {idx.lv}-level positions of {upd.lv}-level updates")
    if x.lv in NE:  # along a feature axis, the same positions for every row
        if idx.lv == "const" and upd.lv == x.lv and 0 not in dn.scatter_dims_to_operand_dims and \
                dn.update_window_dims[:1] == (0,):
            return _rowwise(ip, eqn, [x.x, idx.x, upd.x], outs[0])
        raise ip.refuse("a scatter along a feature axis with per-node positions")
    if x.lv in ("graph", "const") and idx.lv in NE and along0 and outs[0] == "graph":
        s0 = _shape(eqn.invars[0])[0]
        base = x.x if x.lv == "graph" else jnp.broadcast_to(jnp.asarray(x.x), (ip.g, *_shape(eqn.invars[0])))
        flat = base.reshape((ip.g * s0, *base.shape[2:]))
        local = idx.x[..., 0].astype(jnp.int32)
        gidx = ip.graph_index(idx.lv, local.shape)
        if upd.lv not in (idx.lv, "graph", "const"):
            raise ip.refuse("scatter updates at another level than their positions")
        u = ip.full(upd, idx.lv, one_upd, one_upd) if upd.lv != idx.lv else upd.x
        inb = (local >= 0) & (local < s0)
        glob = gidx * s0 + (jnp.clip(local, 0, s0 - 1) if clip else local)
        glob = jnp.where(inb | clip, glob, ip.g * s0)
        res = bind(eqn, [flat, glob[..., None], u], mode=fill, indices_are_sorted=False, unique_indices=False)[0]
        return [res.reshape(base.shape)]
    if _graph_only(ins):
        return per_graph(ip, eqn, ins)
    raise ip.refuse(f"a scatter into a {x.lv}-level value by {idx.lv}-level positions")


def _promised_gradient(ip: Interp, eqn, x: V, local, gidx, upd):
    """Zero, with the gradient XLA gives a promised scatter-add's out-of-bounds updates (dropped
    forward, the clamped row's cotangent backward: its transpose is a promised gather, which
    clamps): a scatter of those updates alone to their clamped rows, minus itself unable to move."""
    dn = eqn.params["dimension_numbers"]
    if tuple(dn.update_window_dims) != tuple(range(upd.ndim - len(dn.update_window_dims), upd.ndim)):
        raise ip.refuse("a scatter with promised bounds whose windows are not its updates' trailing axes")
    cnt = ip.actual(x.lv)[gidx].astype(jnp.int32)
    out = (local < 0) | (local >= cnt)
    clamped = ip.to_global(local, gidx, x.lv, True, "scatter")[..., None]
    stray = jnp.where(out.reshape(out.shape + (1,) * (upd.ndim - out.ndim)), upd, jnp.zeros((), upd.dtype))
    from jax.lax import GatherScatterMode

    b = bind(eqn, [jnp.zeros_like(x.x), clamped, stray], mode=GatherScatterMode.FILL_OR_DROP, indices_are_sorted=False,
             unique_indices=False)[0]
    return b - lax.stop_gradient(b)


def rule_names() -> list[str]:
    """Every primitive with a rule here (the call rules are in :mod:`gnn_batching.ragged.calls`)."""
    return sorted(RULES)


__all__ = ["ELEMENTWISE", "RULES", "per_graph", "rule_names"]
