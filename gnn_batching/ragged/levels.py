"""Symbolic graph sizes and the level of every value.

A one-graph function is traced ONCE with symbolic sizes (JAX's shape polymorphism,
``jax.export.symbolic_shape``): ``n`` nodes and ``e = E - 1`` edges. Writing the edge count as
``E - 1`` with ``E >= 1`` lets it be 0 (JAX assumes every dimension variable is >= 1, which would
make ``max(e, 1)`` simplify to ``e``, wrong for a graph without edges); a graph has at least one
node, so ``n >= 1`` is the truth. Python arithmetic on sizes (``e // 2``, ``n % 2``,
``jnp.maximum(n - 1, 1)``) stays an exact expression that is evaluated per graph on the union;
a Python decision on a size (``if n > 20``, ``min(n, 10)``, ``max(e, 1)``) cannot be decided for
every size, so JAX stops the trace and the function is refused.

The LEVEL of a value follows from its symbolic shape, never from a guess: leading axis ``n``:
per node; leading axis ``e``: per edge; no symbolic axis: per graph (when it depends on the
graph) or parameter-only (``const``); any other symbolic shape (``2n``, ``n x n``, a node axis
that is not leading) is refused.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import export

from gnn_batching.errors import ConfigError

LEVELS = ("node", "edge", "graph", "const")


class Refused(ConfigError):
    """The function cannot be proven to mean the same on the union (the reason names the
    primitive and the user's source line)."""


class Sizes(NamedTuple):
    """The symbolic sizes of one trace: ``n`` nodes, ``e`` edges (``E - 1``)."""

    n: object
    e: object


def symbolic_sizes() -> Sizes:
    """Fresh symbolic node and edge counts (one scope per trace)."""
    n, big_e = export.symbolic_shape("n, E")
    return Sizes(n, big_e - 1)


# where a comparison of sizes is JAX's own business (shape checks, caches): decided as JAX decides;
# anywhere else (the user's code, flax, jraph) it is a decision about the graph
_INTERNAL = {"jax", "jaxlib", "numpy", "ml_dtypes", "opt_einsum", "functools", "operator", "typing", "dataclasses",
             "collections", "contextlib", "abc", "enum", "builtins", "weakref", "threading", "inspect", "copy"}
_STRICT = threading.local()


def _decides(depth: int = 2) -> bool:
    """Whether the code comparing sizes (``depth`` frames up) decides something about the graph."""
    if not getattr(_STRICT, "depth", 0):
        return False
    name = sys._getframe(depth).f_globals.get("__name__", "")
    return name.split(".")[0] not in _INTERNAL and not name.startswith("gnn_batching.ragged")


def _inconclusive(text: str):
    from jax._src.export.shape_poly import InconclusiveDimensionOperation

    return InconclusiveDimensionOperation(f"Symbolic dimension comparison {text} is inconclusive")


@contextmanager
def strict_sizes():
    """While active, a Python decision on a graph size in user code (``n == 1``, ``bool(e)``,
    ``n in (1, 2)``, a size as a dict key) that cannot be made for every graph raises JAX's
    ``InconclusiveDimensionOperation``, as ``n > 20`` already does. JAX itself answers an
    undecidable ``==`` with False ("not provably equal"), which would silently pick one branch for
    every graph."""
    from jax._src.export import shape_poly as sp

    cls = sp._DimExpr
    if getattr(_STRICT, "depth", 0):
        _STRICT.depth += 1
        try:
            yield
        finally:
            _STRICT.depth -= 1
        return
    eq, ne, hsh = cls.__eq__, cls.__ne__, cls.__hash__
    had_bool = "__bool__" in cls.__dict__

    def decide_eq(self, other, depth):  # depth: frames from _decides up to the comparing code
        same = eq(self, other)
        if same or not _decides(depth):
            return same
        try:
            diff = self - other
        except Exception:
            return same
        if not is_symbolic(diff):
            return diff == 0
        lo, hi = sp._bounds_decision(diff, sp.BoundsPrecision.BEST)
        if lo > 0 or hi < 0:
            return False
        raise _inconclusive(f"'{pretty(self)}' == '{pretty(other)}'")

    def strict_eq(self, other):
        return decide_eq(self, other, 3)

    def strict_ne(self, other):
        return not decide_eq(self, other, 3)

    def strict_bool(self):
        if not _decides():
            return True
        lo, hi = sp._bounds_decision(self, sp.BoundsPrecision.BEST)
        if lo > 0 or hi < 0:
            return True
        raise _inconclusive(f"bool('{pretty(self)}')")

    def strict_hash(self):
        if _decides():
            raise _inconclusive(f"'{pretty(self)}' used as a key")
        return hsh(self)

    _STRICT.depth = 1
    cls.__eq__, cls.__ne__, cls.__bool__, cls.__hash__ = strict_eq, strict_ne, strict_bool, strict_hash
    try:
        yield
    finally:
        _STRICT.depth = 0
        cls.__eq__, cls.__ne__, cls.__hash__ = eq, ne, hsh
        if not had_bool:
            del cls.__bool__


def is_symbolic(d) -> bool:
    """Whether a dimension is a symbolic expression (not a plain integer)."""
    return export.is_symbolic_dim(d)


def same_dim(a, b) -> bool:
    """Whether two dimensions are the same expression (symbolic or not)."""
    try:
        return bool(a == b)
    except Exception:  # an inconclusive comparison: not provably the same
        return False


def pretty(x) -> str:
    """A shape or dimension as the user reads it: ``e`` for the edge count, not ``E - 1``."""
    return str(x).replace("E - 1", "e")


def level_of(shape: tuple, sizes: Sizes, graph_dep: bool) -> str:
    """The level of a one-graph value of ``shape`` (see the module docstring).

    Raises:
      Refused: a symbolic shape other than a leading node or edge axis.
    """
    sym = [i for i, d in enumerate(shape) if is_symbolic(d)]
    if not sym:
        return "graph" if graph_dep else "const"
    if sym == [0]:
        if same_dim(shape[0], sizes.n):
            return "node"
        if same_dim(shape[0], sizes.e):
            return "edge"
    raise Refused(f"a value of shape {pretty(tuple(shape))}: only a LEADING axis of the graph's node count n "
                  "or edge count e can be a graph size (no n x n pairs, no concatenation along the nodes, no "
                  "node axis moved away from the front, no size derived from n or e)")


def has_symbolic(obj) -> bool:
    """Whether a primitive's parameter (tuples and lists walked; jaxprs and functions skipped)
    holds a symbolic dimension."""
    if isinstance(obj, (tuple, list)):
        return any(has_symbolic(x) for x in obj)
    return is_symbolic(obj)


def union_shape(shape: tuple, level: str, lead: dict, n_graph: int) -> tuple:
    """A one-graph value's shape on the union, by its level."""
    if level in ("node", "edge"):
        return (lead[level], *shape[1:])
    if level == "graph":
        return (n_graph, *shape)
    return tuple(shape)


def eval_dim(d, env: dict, n_graph: int, dtype) -> jax.Array:
    """A dimension expression evaluated for every graph: ``(G,)`` values of ``dtype``.
    ``env`` maps the symbols (``n``, ``E``) to per-graph counts."""
    if not is_symbolic(d):
        return jnp.full((n_graph,), int(d), dtype)
    return jnp.asarray(d._evaluate(env)).astype(dtype)  # JAX's own evaluator: //, %, max, min exact


def substitute(obj, sizes: Sizes, lead: dict):
    """``obj`` (a shape-like parameter) with the graph's symbolic sizes replaced by the union's
    sizes (``lead``: node -> N, edge -> E).

    Raises:
      Refused: any other symbolic expression (a size derived from n or e).
    """
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(substitute(x, sizes, lead) for x in obj)
    if isinstance(obj, list):
        return [substitute(x, sizes, lead) for x in obj]
    if is_symbolic(obj):
        if same_dim(obj, sizes.n):
            return lead["node"]
        if same_dim(obj, sizes.e):
            return lead["edge"]
        raise Refused(f"a size {pretty(obj)} derived from the graph's counts in a shape")
    return obj
