"""The interpreter: a one-graph jaxpr (symbolic sizes) evaluated on a padded disjoint union.

Every value of the one-graph program has a level (:mod:`gnn_batching.ragged.levels`) and a
union representation: per-node values keep their leading axis (N rows), per-edge values theirs
(E rows), per-graph values gain a leading axis of graph slots (G), parameter-only values are as
traced. Integers that are positions in a graph (``senders``, ``receivers``, ``jnp.arange(n)``,
``zeros_like(nodes)``) stay LOCAL, as the one-graph function sees them; a gather or scatter along a
node/edge axis turns them into union positions with the graph's own offset and bounds.

The world is closed: each primitive is handled by a rule (:mod:`gnn_batching.ragged.rules`, or a
call rule in :mod:`gnn_batching.ragged.calls`, both registered in
:mod:`gnn_batching.ragged.table`) that states what it means per graph; anything else is refused,
naming the primitive and the user's source line. Parameter-only equations (no
graph value, no graph size) are bound as traced: they mean the same for every graph.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as xcore

from gnn_batching.ragged.levels import Refused, Sizes, eval_dim, has_symbolic, level_of, pretty, union_shape
from gnn_batching.ragged.table import CALL_RULES, RULES

NE = ("node", "edge")


class V(NamedTuple):
    """A value on the union and its level."""

    x: Any
    lv: str


class Struct(NamedTuple):
    """The union's structure as arrays (passed explicitly into derivative rules, which must not
    close over traced values)."""

    node_gid: jax.Array
    edge_gid: jax.Array
    n_node: jax.Array
    n_edge: jax.Array
    real: jax.Array


def where_of(eqn) -> str:
    """`` at file:line`` of the user's code that made ``eqn`` (best effort; empty when JAX kept no
    user frame, e.g. inside a library's own jitted function)."""
    try:
        from jax._src import source_info_util

        text = source_info_util.summarize(eqn.source_info)
    except Exception:  # pragma: no cover - source info is best effort
        return ""
    return f" at {text}" if text and text.strip() else ""


def bind(eqn, xs: list, **updates) -> list:
    """``eqn``'s primitive bound to ``xs`` with its parameters (``updates`` replaced)."""
    params = dict(eqn.params, **updates)
    prim = eqn.primitive
    out = prim.bind(*xs, **prim.get_bind_params(params))
    return list(out) if prim.multiple_results else [out]


class Interp:
    """Evaluates one-graph jaxprs on a union (see the module docstring)."""

    def __init__(self, struct: Struct, n_graph: int, lead: dict, sizes: Sizes):
        self.s = struct
        self.g = n_graph
        self.lead = lead  # node -> N, edge -> E
        self.sizes = sizes
        self.eqn_now = None
        self.outer: list = []  # the enclosing call equations (for a source line when an inner one has none)
        self._memo: dict = {}

    # ---- the union's structure -------------------------------------------------------------
    def gid(self, level: str) -> jax.Array:
        """The graph of each node or edge."""
        return self.s.node_gid if level == "node" else self.s.edge_gid

    def actual(self, level: str) -> jax.Array:
        """Each graph's real node or edge count (0 for an empty slot)."""
        return self.s.n_node if level == "node" else self.s.n_edge

    @cached_property
    def offsets(self) -> dict:
        """Each graph's first node and first edge in the union."""
        return {lv: jnp.cumsum(self.actual(lv)) - self.actual(lv) for lv in NE}

    @cached_property
    def dim_env(self) -> dict:
        """Per-graph values of the symbols ``n`` and ``E`` (= edges + 1). A padding slot counts at
        least one node and one edge, so a mean over an empty slot is 0, not 0/0 (its NaN would
        reach the gradient through the masked sum); a real graph keeps its own counts."""
        nn = jnp.where(self.s.real, self.s.n_node, jnp.maximum(self.s.n_node, 1))
        ne = jnp.where(self.s.real, self.s.n_edge, jnp.maximum(self.s.n_edge, 1))
        return {"n": nn.astype(jnp.int32), "E": (ne + 1).astype(jnp.int32)}

    def size_of(self, level: str) -> jax.Array:
        """Each graph's node or edge count as the one-graph function sees it (``dim_env``)."""
        return self.dim_env["n"] if level == "node" else self.dim_env["E"] - 1

    def dim(self, d, dtype) -> jax.Array:
        """A (symbolic) dimension, evaluated for every graph: ``(G,)``."""
        return eval_dim(d, self.dim_env, self.g, dtype)

    def positions(self, level: str) -> jax.Array:
        """Each node's (edge's) position in its own graph: ``jnp.arange(n)`` per graph."""
        key = ("pos", level)
        if key not in self._memo:
            idx = jnp.arange(self.lead[level], dtype=jnp.int32)
            self._memo[key] = idx - self.offsets[level][self.gid(level)].astype(jnp.int32)
        return self._memo[key]

    # ---- moving values between levels -----------------------------------------------------------
    def refuse(self, reason: str) -> Refused:
        """A refusal naming the current primitive and the user's source line."""
        eqn = self.eqn_now
        if eqn is None:
            return Refused(f"ragged: {reason}")
        where = next((w for w in map(where_of, [eqn, *reversed(self.outer)]) if w), "")
        return Refused(f"ragged: {eqn.primitive.name}{where}: {reason}")

    def lift(self, v: V, to: str):
        """``v`` seen at level ``to``: a per-graph value gathered by each node's (edge's) graph;
        a parameter-only value as it is (it broadcasts)."""
        if v.lv == to or v.lv == "const":
            return v.x
        if v.lv == "graph" and to in NE:
            key = ("lift", id(v.x), to)
            if key not in self._memo:
                self._memo[key] = (v.x, jnp.take(v.x, self.gid(to), axis=0))  # keep v.x alive: ids stay unique
            return self._memo[key][1]
        raise self.refuse(f"a {v.lv}-level value used at {to} level")

    def full(self, v: V, to: str, one_shape: tuple, v_shape: tuple):
        """``v`` (one-graph shape ``v_shape``, broadcastable to ``one_shape`` as the trace allows:
        a scalar, or size-1 axes) as a full union array at level ``to``."""
        want = union_shape(one_shape, to, self.lead, self.g)
        x = jnp.asarray(v.x)
        if v.lv == "const":  # right-aligned broadcasting, as in the trace
            return x if x.shape == want else jnp.broadcast_to(x, want)
        rest = tuple(v_shape[1:]) if v.lv in NE else tuple(v_shape)
        if v.lv == "graph" and to in NE:
            x = self.lift(v, to)
            if len(v_shape) == len(one_shape) and len(v_shape):  # (1, f) broadcast along the nodes
                x = x.reshape((x.shape[0], *v_shape[1:]))
                rest = tuple(v_shape[1:])
        elif v.lv != to:
            raise self.refuse(f"a {v.lv}-level value used at {to} level")
        target = want[1:]
        if len(rest) < len(target):
            x = x.reshape((x.shape[0],) + (1,) * (len(target) - len(rest)) + rest)
        return x if x.shape == want else jnp.broadcast_to(x, want)

    def real_rows(self, level: str) -> jax.Array:
        """Whether each graph slot (``graph``), node or edge belongs to a real graph."""
        if level not in NE:
            return self.s.real
        key = ("real_rows", level)
        if key not in self._memo:
            self._memo[key] = self.s.real[self.gid(level)]
        return self._memo[key]

    def safe_padding(self, x, level: str = "graph"):
        """A value at ``level`` with 1 in the padding graphs' slots or rows; real graphs keep their
        own values (they never read another graph's rows). Per graph: an empty slot's sum is 0, its
        log, inverse or norm infinite. Per node or edge: padding has structure no real graph has
        (jraph puts every padding edge on the first padding node, so the others have no in-edge: a
        degree of 0, an empty max of -inf). Either way an inf fed to the next operation makes an
        infinite derivative there, and its zero cotangent times that is NaN in every parameter's
        gradient; with every result's padding at 1, each operation's padding inputs are 1."""
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact) or x.shape[0] == 0:
            return x
        real = self.real_rows(level).reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(real, x, jnp.ones((), x.dtype))

    def graph_index(self, level: str, shape: tuple) -> jax.Array:
        """The graph of every element of a union array of ``shape`` at ``level`` (leading axis)."""
        g = self.gid(level) if level in NE else jnp.arange(self.g, dtype=jnp.int32)
        return g.reshape((g.shape[0],) + (1,) * (len(shape) - 1))

    def to_global(self, idx, gidx, target: str, clip: bool, kind: str):
        """Local positions ``idx`` into each element's graph's ``target`` rows (node/edge) as union
        positions, with the one-graph bounds: ``clip`` clamps into the graph, else out-of-range
        positions are out of the union too (dropped by a scatter, filled by a gather). An empty
        graph slot never touches another graph's rows; a padding graph's gather reads some row of
        the union (finite values only: a NaN there would reach the gradient)."""
        lead = self.lead[target]
        cnt = self.actual(target)[gidx].astype(idx.dtype)
        off = self.offsets[target][gidx].astype(idx.dtype)
        if clip:
            valid = cnt > 0
            local = jnp.clip(idx, 0, jnp.maximum(cnt - 1, 0))
        else:
            valid = (idx >= 0) & (idx < cnt)
            local = idx
        glob = local + off
        if kind == "scatter":
            return jnp.where(valid, glob, jnp.asarray(lead, idx.dtype))
        safe = jnp.clip(glob, 0, max(lead - 1, 0))
        if clip:  # only an empty graph is out of bounds: read a row that exists
            return jnp.where(valid, glob, safe)
        return jnp.where(valid, glob, jnp.where(self.s.real[gidx], jnp.asarray(lead, idx.dtype), safe))

    # ---- running jaxprs ----------------------------------------------------------------------
    def run(self, jaxpr, consts, args: list[V]) -> list[V]:
        """Evaluates ``jaxpr`` (open, its ``constvars`` bound to ``consts``, parameter-only) on
        the union values ``args``."""
        env: dict = {}

        def read(v) -> V:
            if isinstance(v, xcore.Literal):
                return V(v.val, "const")
            return env[v]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = V(c, "const")
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for eqn in jaxpr.eqns:
            outs = self.equation(eqn, [read(v) for v in eqn.invars])
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def run_closed(self, closed, args: list[V]) -> list[V]:
        """:meth:`run` for a ``ClosedJaxpr``."""
        return self.run(closed.jaxpr, closed.consts, args)

    def equation(self, eqn, ins: list[V]) -> list[V]:
        """One equation: a call rule, the parameter-only rule, or the primitive's rule."""
        prim = eqn.primitive.name
        outer, self.eqn_now = self.eqn_now, eqn
        try:
            if prim in CALL_RULES:
                self.outer.append(eqn)
                try:
                    outs = CALL_RULES[prim](self, eqn, ins)
                finally:
                    self.outer.pop()
                self.eqn_now = eqn
            else:
                dep = any(v.lv != "const" for v in ins) or prim == "dim_as_value" or \
                    any(has_symbolic(p) for p in eqn.params.values())
                try:
                    levels = [level_of(tuple(o.aval.shape), self.sizes, dep) for o in eqn.outvars]
                except Refused as exc:
                    raise self.refuse(str(exc).removeprefix("ragged: ")) from None
                if not dep:  # parameters only: the same value for every graph
                    xs = bind(eqn, [v.x for v in ins])
                else:
                    rule = RULES.get(prim)
                    if rule is None:
                        raise self.refuse("no rule for this primitive on a disjoint union (its meaning per graph "
                                          "is not known, so it is not passed through)")
                    xs = rule(self, eqn, ins, levels)
                    from_rows = any(v.lv in NE for v in ins)
                    xs = [self.safe_padding(x, lv) if lv in NE or (lv == "graph" and from_rows) else x
                          for x, lv in zip(xs, levels)]
                outs = [V(x, lv) for x, lv in zip(xs, levels)]
            for o, v in zip(eqn.outvars, outs):
                want = union_shape(tuple(o.aval.shape), v.lv, self.lead, self.g)
                if tuple(np.shape(v.x)) != want:
                    raise self.refuse(f"internal: union shape {tuple(np.shape(v.x))}, expected {want} for a "
                                      f"{v.lv}-level value of one-graph shape {pretty(tuple(o.aval.shape))}")
            return outs
        finally:
            self.eqn_now = outer
