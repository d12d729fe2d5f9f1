"""Call-like primitives: nested jits, ``jax.checkpoint``, the user's derivative rules
(``jax.custom_jvp`` / ``jax.custom_vjp``) and control flow, re-interpreted with their own
semantics on the union.

* ``jit`` / ``closed_call``: the inner program interpreted in place.
* ``checkpoint`` (remat): the interpreted inner program under ``jax.checkpoint`` with the same policy.
* ``custom_jvp_call``: a union-level ``jax.custom_jvp`` whose primal is the interpreted primal and
  whose JVP is the user's JVP rule, traced for one graph and interpreted on the union: each graph
  gets its own rule (a straight-through estimator, ``relu``'s derivative at 0, a gradient scale).
* ``custom_vjp_call``: a union-level ``jax.custom_vjp``: the user's forward and backward rules,
  traced for one graph and interpreted on the union; a parameter's cotangent is the sum of each
  graph's.
* ``cond`` / ``while`` / ``scan``: with parameter-only control (the branch index, the loop
  condition; a scan over parameter-only or per-graph sequences), the union program under the same
  control primitive. A branch or loop that differs per graph is refused.

The union's structure is passed into derivative rules as arguments (they must not close over
traced values). Anything these rules cannot run is refused, never inlined without its rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gnn_batching.ragged.interp import NE, Interp, Struct, V
from gnn_batching.ragged.levels import level_of, strict_sizes
from gnn_batching.ragged.table import CALL_RULES

RANK = {"const": 0, "graph": 1, "node": 2, "edge": 2}


def _child(ip: Interp, arrays) -> Interp:
    """A new interpreter on the union structure ``arrays`` (values traced where it runs: its
    caches never leak into, or out of, another trace)."""
    sub = Interp(Struct(*arrays), ip.g, ip.lead, ip.sizes)
    sub.outer = [*ip.outer, *([ip.eqn_now] if ip.eqn_now is not None else [])]
    return sub


def _fresh(ip: Interp) -> Interp:
    """:func:`_child` on the same structure: for a loop or branch body, traced apart."""
    return _child(ip, ip.s)


def _no_tracers(ip: Interp, consts, what: str) -> None:
    if any(isinstance(c, jax.core.Tracer) for c in consts):
        raise ip.refuse(f"a {what} closing over a traced value (e.g. an array in nondiff_argnums): pass it as an "
                        "argument")


def _canonical(ip: Interp, outvars, ins: list[V]) -> list[str]:
    """Output levels of a call: from the one-graph shape; per graph unless every input is
    parameter-only."""
    dep = any(v.lv != "const" for v in ins)
    return [level_of(tuple(o.aval.shape), ip.sizes, dep) for o in outvars]


def _to(ip: Interp, v: V, level: str, shape: tuple):
    """``v`` raised to ``level`` (const -> graph -> node/edge); refused if it would go down."""
    if v.lv == level:
        return v.x
    if RANK[v.lv] > RANK[level]:
        raise ip.refuse(f"a {v.lv}-level result where a {level}-level one was expected (a rule whose value "
                        "depends on the graph differently from its primal)")
    return ip.full(v, level, shape, shape)


def _inexact(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def _zero_tangent(x, aval):
    if _inexact(aval):
        return jnp.zeros(jnp.shape(x), aval.dtype)
    return np.zeros(jnp.shape(x), jax.dtypes.float0)


def inline(ip: Interp, eqn, ins: list[V]) -> list[V]:
    """A nested jit or call: its program interpreted in place."""
    p = eqn.params
    inner = p.get("jaxpr", p.get("call_jaxpr"))
    if hasattr(inner, "consts"):
        return ip.run_closed(inner, ins)
    return ip.run(inner, [], ins)


def remat(ip: Interp, eqn, ins: list[V]) -> list[V]:
    """``jax.checkpoint``: the interpreted program, checkpointed with the same policy."""
    p = eqn.params
    inner = p["jaxpr"]
    levels = [v.lv for v in ins]
    ns = len(ip.s)
    holder: dict = {}

    def body(*args):
        sub = _child(ip, args[:ns])
        outs = sub.run(inner, [], [V(x, lv) for x, lv in zip(args[ns:], levels)])
        holder["levels"] = [o.lv for o in outs]
        return [o.x for o in outs]

    xs = jax.checkpoint(body, prevent_cse=p.get("prevent_cse", True), policy=p.get("policy"))(
        *ip.s, *[v.x for v in ins])
    return [V(x, lv) for x, lv in zip(xs, holder["levels"])]


def _signature(ip: Interp, eqn, ins: list[V]) -> tuple:
    """A derivative rule's inputs' levels and avals, its outputs' avals and levels, and how many
    structure arrays lead the union-level function's arguments."""
    return ([v.lv for v in ins], [v.aval for v in eqn.invars], [v.aval for v in eqn.outvars],
            _canonical(ip, eqn.outvars, ins), len(ip.s))


def _primal(ip: Interp, call, in_levels: list[str], out_levels: list[str], out_avals: list):
    """The union-level primal of a custom rule: ``call`` interpreted on the structure it is given."""
    ns = len(ip.s)

    def primal(*args):
        sub = _child(ip, args[:ns])
        outs = sub.run_closed(call, [V(x, lv) for x, lv in zip(args[ns:], in_levels)])
        return [_to(sub, o, lv, tuple(a.shape)) for o, lv, a in zip(outs, out_levels, out_avals)]

    return primal


def custom_jvp(ip: Interp, eqn, ins: list[V]) -> list[V]:
    """The user's ``custom_jvp`` rule, per graph (see the module docstring)."""
    p = eqn.params
    nc, call, jvp_fun = p["num_consts"], p["call_jaxpr"], p["jvp_jaxpr_fun"]
    in_levels, in_avals, out_avals, out_levels, ns = _signature(ip, eqn, ins)
    diff = [_inexact(a) for a in in_avals[nc:]]
    primal = _primal(ip, call, in_levels, out_levels, out_avals)

    def jvp(primals, tangents):
        sub = _child(ip, primals[:ns])
        xs, ts = primals[ns:], tangents[ns:]
        with strict_sizes():
            jaxpr, consts, out_zeros = jvp_fun.call_wrapped(*[not d for d in diff])
        _no_tracers(sub, consts, "custom_jvp rule")
        args = [V(x, lv) for x, lv in zip(xs[nc:], in_levels[nc:])]
        args += [V(t, lv) for t, lv, d in zip(ts[nc:], in_levels[nc:], diff) if d]
        outs = sub.run(jaxpr, consts, args)
        k = len(out_zeros)
        p_out = [_to(sub, o, lv, tuple(a.shape)) for o, lv, a in zip(outs[:k], out_levels, out_avals)]
        nz = iter(outs[k:])
        t_out = []
        for z, x, lv, a in zip(out_zeros, p_out, out_levels, out_avals):
            t_out.append(_zero_tangent(x, a) if z else _to(sub, next(nz), lv, tuple(a.shape)))
        return p_out, t_out

    fn = jax.custom_jvp(primal)
    fn.defjvp(jvp)
    xs = fn(*ip.s, *[v.x for v in ins])
    return [V(x, lv) for x, lv in zip(xs, out_levels)]


def custom_vjp(ip: Interp, eqn, ins: list[V]) -> list[V]:
    """The user's ``custom_vjp`` forward and backward rules, per graph (see the module docstring)."""
    p = eqn.params
    nc, call, fwd_thunk, bwd_fun, out_trees = (p["num_consts"], p["call_jaxpr"], p["fwd_jaxpr_thunk"], p["bwd"],
                                                p["out_trees"])
    in_levels, in_avals, out_avals, out_levels, ns = _signature(ip, eqn, ins)
    nonzeros = [_inexact(a) for a in in_avals[nc:]]
    with strict_sizes():
        fwd_jaxpr, fwd_consts = fwd_thunk.call_wrapped(*nonzeros)
    _no_tracers(ip, fwd_consts, "custom_vjp forward rule")
    _, res_tree, input_fwds = out_trees()
    n_res_out = res_tree.num_leaves - sum(f is not None for f in input_fwds)
    res_avals = []
    res_out_avals = iter([v.aval for v in fwd_jaxpr.outvars[:n_res_out]])
    for f in input_fwds:
        res_avals.append(next(res_out_avals) if f is None else in_avals[f])
    with strict_sizes():
        bwd = _trace_bwd(bwd_fun, res_avals, out_avals)
    _no_tracers(ip, bwd[1], "custom_vjp backward rule")
    holder: dict = {}
    primal = _primal(ip, call, in_levels, out_levels, out_avals)

    def fwd(*args):
        sub = _child(ip, args[:ns])
        xs = [V(x, lv) for x, lv in zip(args[ns:], in_levels)]
        outs = sub.run(fwd_jaxpr, fwd_consts, xs[nc:])
        res_out, prim_out = outs[:n_res_out], outs[n_res_out:]
        it = iter(res_out)
        res = [next(it) if f is None else xs[f] for f in input_fwds]
        holder["res_levels"] = [r.lv for r in res]
        prim = [_to(sub, o, lv, tuple(a.shape)) for o, lv, a in zip(prim_out, out_levels, out_avals)]
        return prim, (tuple(args[:ns]), tuple(r.x for r in res))

    def bwd_rule(saved, cts):
        struct, res = saved
        sub = _child(ip, struct)
        jaxpr, consts, mask = bwd
        args = [V(r, lv) for r, lv in zip(res, holder["res_levels"])]
        args += [V(c, lv) for c, lv in zip(cts, out_levels)]
        outs = iter(sub.run(jaxpr, consts, args))
        grads = [None] * (ns + nc)
        real = sub.s.real
        for keep, lv, a in zip(mask, in_levels[nc:], in_avals[nc:]):
            ct = next(outs) if keep else None
            if ct is None or not _inexact(a):
                grads.append(None)
                continue
            if ct.lv in ("graph", *NE):  # only the real graphs' cotangents: a rule that is not linear in
                rows = real if ct.lv == "graph" else real[sub.gid(ct.lv)]  # its cotangent must not act on padding
                ct = V(jnp.where(rows.reshape((-1,) + (1,) * (jnp.ndim(ct.x) - 1)), ct.x, 0), ct.lv)
            if lv == "const":
                if ct.lv == "const":
                    raise sub.refuse("a custom_vjp rule whose cotangent for a parameter is the same for every "
                                     "graph (it does not depend on the graph's cotangent)")
                grads.append(jnp.sum(ct.x, axis=0))
            else:
                grads.append(_to(sub, ct, lv, tuple(a.shape)))
        return tuple(grads)

    fn = jax.custom_vjp(primal)
    fn.defvjp(fwd, bwd_rule)
    xs = fn(*ip.s, *[v.x for v in ins])
    return [V(x, lv) for x, lv in zip(xs, out_levels)]


def _trace_bwd(bwd_fun, res_avals, out_avals):
    """The user's backward rule traced for ONE graph: ``(jaxpr, consts, mask)``, ``mask`` saying
    which inputs get a cotangent (the others: zero / ``None``)."""
    from jax._src.ad_util import Zero

    holder: dict = {}

    def run(*args):
        cts = bwd_fun.call_wrapped(*args)
        holder["mask"] = [not isinstance(c, Zero) and c is not None for c in cts]
        return [c for c, keep in zip(cts, holder["mask"]) if keep]

    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in res_avals]
    specs += [jax.ShapeDtypeStruct(a.shape, a.to_tangent_aval().dtype) for a in out_avals]
    closed = jax.make_jaxpr(run)(*specs)
    return closed.jaxpr, closed.consts, holder["mask"]


def _fixed_levels(ip: Interp, body, consts: list[V], carries: list[V], carry_avals, extra: list[V]) -> list[str]:
    """Carry levels that a loop body keeps: parameter-only carries promoted to per graph while
    the body makes them depend on the graph (a fixed point, at most a few passes)."""
    levels = [c.lv for c in carries]
    for _ in range(len(carries) + 1):
        trial = [V(ip.full(c, lv, tuple(a.shape), tuple(a.shape)) if c.lv != lv else c.x, lv)
                 for c, lv, a in zip(carries, levels, carry_avals)]
        holder: dict = {}

        def probe(*xs, trial=trial, holder=holder):
            outs = body([V(x, v.lv) for x, v in zip(xs, consts + trial + extra)])
            holder["levels"] = [o.lv for o in outs]
            return [o.x for o in outs]

        jax.eval_shape(probe, *[v.x for v in consts + trial + extra])
        out = holder["levels"][: len(carries)]
        new = [max(a, b, key=RANK.get) if RANK[a] != RANK[b] else a for a, b in zip(levels, out)]
        if new == levels:
            return levels
        levels = new
    raise ip.refuse("a loop whose carried values keep changing level")


def cond(ip: Interp, eqn, ins: list[V]) -> list[V]:
    """``lax.cond`` / ``lax.switch`` on a parameter-only index: each branch interpreted."""
    index, ops = ins[0], ins[1:]
    if index.lv != "const":
        raise ip.refuse("a branch chosen per graph (lax.cond on a graph's value or size): write it with "
                        "jnp.where, or use autobatch_mode: vmap")
    out_levels = _canonical(ip, eqn.outvars, ops)
    out_avals = [v.aval for v in eqn.outvars]

    def branch(closed):
        def run(*xs):
            sub = _fresh(ip)
            outs = sub.run_closed(closed, [V(x, v.lv) for x, v in zip(xs, ops)])
            return [_to(sub, o, lv, tuple(a.shape)) for o, lv, a in zip(outs, out_levels, out_avals)]

        return run

    xs = jax.lax.switch(index.x, [branch(b) for b in eqn.params["branches"]], *[v.x for v in ops])
    return [V(x, lv) for x, lv in zip(xs, out_levels)]


def while_loop(ip: Interp, eqn, ins: list[V]) -> list[V]:
    """``lax.while_loop`` whose condition is parameter-only (e.g. a counter)."""
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, init = ins[:cn], ins[cn : cn + bn], ins[cn + bn :]
    carry_avals = [v.aval for v in eqn.outvars]

    def run_body(vals):
        sub = _fresh(ip)
        return sub, sub.run_closed(p["body_jaxpr"], vals)

    def body(vals):
        return run_body(vals)[1]

    levels = _fixed_levels(ip, body, bconsts, init, carry_avals, [])
    start = [ip.full(c, lv, tuple(a.shape), tuple(a.shape)) if c.lv != lv else c.x
             for c, lv, a in zip(init, levels, carry_avals)]

    def cond_fn(carry):
        out = _fresh(ip).run_closed(p["cond_jaxpr"], cconsts + [V(x, lv) for x, lv in zip(carry, levels)])[0]
        if out.lv != "const":
            raise ip.refuse("a loop whose number of steps differs per graph")
        return out.x

    def body_fn(carry):
        sub, outs = run_body(bconsts + [V(x, lv) for x, lv in zip(carry, levels)])
        return [_to(sub, o, lv, tuple(a.shape)) for o, lv, a in zip(outs, levels, carry_avals)]

    xs = jax.lax.while_loop(cond_fn, body_fn, start)
    return [V(x, lv) for x, lv in zip(xs, levels)]


def scan(ip: Interp, eqn, ins: list[V]) -> list[V]:
    """``lax.scan`` (``fori_loop`` with a fixed trip count, Flax's ``nn.scan``) over
    parameter-only or per-graph sequences; carries may be per node."""
    p = eqn.params
    nc, ncar, length = p["num_consts"], p["num_carry"], p["length"]
    consts, init, xs = ins[:nc], ins[nc : nc + ncar], ins[nc + ncar :]
    if any(x.lv in NE for x in xs):
        raise ip.refuse("a scan along the node/edge axis")
    carry_avals = [v.aval for v in eqn.outvars[:ncar]]
    x_slices = [V(x.x[:, 0] if x.lv == "graph" else x.x[0], x.lv) for x in xs]

    def run_body(vals):
        sub = _fresh(ip)
        return sub, sub.run_closed(p["jaxpr"], vals)

    def body(vals):
        return run_body(vals)[1]

    levels = _fixed_levels(ip, body, consts, init, carry_avals, x_slices)
    start = [ip.full(c, lv, tuple(a.shape), tuple(a.shape)) if c.lv != lv else c.x
             for c, lv, a in zip(init, levels, carry_avals)]
    holder: dict = {}

    def step(carry, x):
        carried = [V(c, lv) for c, lv in zip(carry, levels)]
        sub, outs = run_body(consts + carried + [V(xx, v.lv) for xx, v in zip(x, xs)])
        new = [_to(sub, o, lv, tuple(a.shape)) for o, lv, a in zip(outs[:ncar], levels, carry_avals)]
        ys = outs[ncar:]
        holder["y_levels"] = [y.lv for y in ys]
        return new, [y.x for y in ys]

    seqs = [jnp.moveaxis(x.x, 1, 0) if x.lv == "graph" else x.x for x in xs]
    carry, ys = jax.lax.scan(step, start, seqs, length=length, reverse=p["reverse"], unroll=p.get("unroll", 1))
    out = [V(c, lv) for c, lv in zip(carry, levels)]
    for y, lv in zip(ys, holder["y_levels"]):
        if lv in NE:
            raise ip.refuse("a scan stacking per-node values")
        out.append(V(jnp.moveaxis(y, 0, 1) if lv == "graph" else y, lv))
    return out


CALL_RULES.update({
    "jit": inline, "pjit": inline, "closed_call": inline, "core_call": inline,
    "remat2": remat, "checkpoint": remat, "remat": remat,
    "custom_jvp_call": custom_jvp, "custom_vjp_call": custom_vjp,
    "cond": cond, "while": while_loop, "scan": scan,
})

__all__ = ["CALL_RULES"]
