"""Griffe extension for the docs site: Sphinx cross-reference roles in docstrings become links.

The package's docstrings are Google style with Sphinx roles for cross-references
(``:func:`load_config```, ``:class:`~gnn_batching.train.loop.Loop```), which mkdocstrings shows
as raw text. This extension (``mkdocs.yml``: ``mkdocstrings`` -> ``extensions``) rewrites each role,
once the whole package is loaded, into an optional autorefs reference: a link where the object is
rendered on the site, its name in code font where it is not, never a raw role. A name is resolved
from the docstring's own scope, as Python would (``prepare`` inside ``gnn_batching.train.run`` is
``gnn_batching.train.run.prepare``); a ``~`` shows only its last part, as Sphinx does.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`<>]+)`")


def _lazy() -> dict:
    """The package's lazy top-level names (``gnn_batching.load_config`` -> ``gnn_batching.config``)."""
    try:
        from gnn_batching import _LAZY
    except ImportError:
        return {}
    return _LAZY


def _resolve(obj: griffe.Object, name: str) -> str:
    """The full path of ``name`` as seen from ``obj``'s scope (``name`` itself when unknown)."""
    head, _, rest = name.partition(".")
    try:
        full = obj.resolve(head)
    except (griffe.NameResolutionError, AttributeError, KeyError):
        full = head
    full = f"{full}.{rest}" if rest else full
    top, _, attr = full.partition(".")
    lazy = _lazy()
    return f"{lazy[attr]}.{attr}" if top == "gnn_batching" and attr in lazy else full


def rewrite(text: str, obj: griffe.Object) -> str:
    """``text`` with every Sphinx role replaced by an optional autorefs reference."""

    def one(m: re.Match) -> str:
        target = m["target"].strip()
        shown = target.rsplit(".", 1)[-1] if m["tilde"] else target
        ident = _resolve(obj, target)
        return f'<autoref identifier="{html.escape(ident)}" optional><code>{html.escape(shown)}</code></autoref>'

    return ROLE.sub(one, text)


def _walk(obj: Any, seen: set[int]):
    if id(obj) in seen or getattr(obj, "is_alias", False):
        return
    seen.add(id(obj))
    yield obj
    for member in getattr(obj, "members", {}).values():
        yield from _walk(member, seen)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Every object of ``pkg``: its docstring's roles become references."""
        for obj in _walk(pkg, set()):
            if obj.docstring is not None and ":`" in obj.docstring.value:
                obj.docstring.value = rewrite(obj.docstring.value, obj)
