"""The interpreter's rule tables, filled by :mod:`gnn_batching.ragged.rules` (primitives) and
:mod:`gnn_batching.ragged.calls` (call-like primitives) when they are imported (the package
imports both); the interpreter only reads them, so imports flow one way."""

from __future__ import annotations

from collections.abc import Callable

RULES: dict[str, Callable] = {}  # primitive name -> rule(interp, eqn, ins, out_levels) -> union arrays
CALL_RULES: dict[str, Callable] = {}  # primitive name -> rule(interp, eqn, ins) -> values with levels
