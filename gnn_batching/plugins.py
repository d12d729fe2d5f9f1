"""Plug-ins: models and batching methods by name, the package's own and the user's alike.

A model is a Flax module built as ``Cls(n_species=..., **hyperparameters)`` that maps a padded
``GraphsTuple`` (``nodes``: (N,) species ids, ``edges``: (E, 4) distance and displacement) to
(n_graph,) predictions; its hyperparameters are its module fields, set as ``model.<field>``. A
method is a :class:`~gnn_batching.batching.methods.BatchingMethod` subclass that plans an epoch
from size arrays and declares its own options (``batching.options.<name>``)::

    import flax.linen as nn
    from gnn_batching import register_method, register_model
    from gnn_batching.batching.methods import StaticMethod

    @register_model("my-model")
    class MyModel(nn.Module):
        n_species: int
        width: int = 32
        def __call__(self, graph): ...          # (n_graph,) predictions

    @register_method("static-128")
    class Static128(StaticMethod):
        options = {"multiple": 128}
        def shapes_for(self, sum_n, sum_e): ...

A user's file is loaded with ``--module FILE_OR_MODULE`` (run, sweep, bench, advise), the
top-level ``modules: [...]`` config key, or the entry-point groups ``gnn_batching.models`` and
``gnn_batching.methods`` of an installed package. The package's own models and methods register
themselves the same way, in the modules of ``gnn_batching/models/`` and ``gnn_batching/batching/``,
so adding one is one new file there.

This module imports nothing heavy: the registries fill the first time a name is looked up.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gnn_batching.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its module class and where it came from."""

    name: str
    cls: type
    description: str = ""

    @property
    def origin(self) -> str:
        """The file that defined the model (for messages)."""
        return _origin(self.cls)

    @property
    def dense(self) -> type | None:
        """The same model written for ONE graph with dense n x n pairs (``model.form: dense``), if any."""
        return _DENSE.get(self.name)


_MODELS: dict[str, ModelEntry] = {}
_DENSE: dict[str, type] = {}
_METHODS: dict[str, type] = {}
_BUILTINS_LOADED = False
_EP_LOADED: set[str] = set()
# fields of a Flax module that are not hyperparameters
_NOT_HYPER = {"n_species", "parent", "name"}


def _origin(obj: Any) -> str:
    mod = sys.modules.get(getattr(obj, "__module__", ""), None)
    return getattr(mod, "__file__", None) or getattr(obj, "__module__", "?")


def register_model(name: str, *, form: str = "sparse", description: str = "") -> Callable[[type], type]:
    """Decorator: make a Flax module class a model usable as ``model.name: NAME``.

    Args:
      name: the config name.
      form: ``sparse`` (the model, over a padded disjoint union) or ``dense`` (the same model
        written for ONE graph with dense n x n pairs: ``model.form: dense``, autobatch only).
      description: one line for listings (default: the first line of the docstring).

    Raises:
      ConfigError: the class has no ``n_species`` field (the one-hot input width), or the name
        is taken by another class.
    """

    def deco(cls: type) -> type:
        fields = _module_fields(cls)
        if "n_species" not in fields:
            raise ConfigError(f"register_model({name!r}): {cls.__qualname__} ({_origin(cls)}) needs a field "
                              "`n_species: int` (the model is built as Cls(n_species=..., **hyperparameters))")
        if form not in ("sparse", "dense"):
            raise ConfigError(f"register_model({name!r}): form must be 'sparse' or 'dense', got {form!r}")
        table = _DENSE if form == "dense" else {k: e.cls for k, e in _MODELS.items()}
        old = table.get(name)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ConfigError(f"register_model({name!r}): the name is taken by {old.__qualname__} "
                              f"({_origin(old)}); choose another for {cls.__qualname__} ({_origin(cls)})")
        if form == "dense":
            _DENSE[name] = cls
        else:
            doc = description or (cls.__doc__ or "").strip().split("\n")[0]
            _MODELS[name] = ModelEntry(name, cls, doc)
        return cls

    return deco


def register_method(name: str) -> Callable[[type], type]:
    """Decorator: make a ``BatchingMethod`` subclass a method usable as ``batching.method: NAME``
    (sets the class's ``name``).

    Raises:
      ConfigError: not a ``BatchingMethod`` subclass, or the name is taken by another class.
    """

    def deco(cls: type) -> type:
        # BatchingMethod by its place in the class hierarchy (importing it here would tie this
        # leaf module to the batching package)
        bases = cls.__mro__ if isinstance(cls, type) else ()
        if not any(b.__name__ == "BatchingMethod" and b.__module__ == "gnn_batching.batching.methods" for b in bases):
            raise ConfigError(f"register_method({name!r}): {getattr(cls, '__qualname__', cls)!r} ({_origin(cls)}) "
                              "is not a BatchingMethod subclass")
        old = _METHODS.get(name)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ConfigError(f"register_method({name!r}): the name is taken by {old.__qualname__} "
                              f"({_origin(old)}); choose another for {cls.__qualname__} ({_origin(cls)})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def _import_package_modules(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")


def _builtins() -> None:
    """Import the package's model and method modules (they register themselves) and the
    entry points of installed packages."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        _import_package_modules("gnn_batching.batching")
        _import_package_modules("gnn_batching.models")
    _entry_points("gnn_batching.models", register_model)
    _entry_points("gnn_batching.methods", register_method)


def _entry_points(group: str, register: Callable[[str], Callable[[type], type]]) -> None:
    if group in _EP_LOADED:
        return
    _EP_LOADED.add(group)
    from importlib.metadata import entry_points

    for ep in entry_points(group=group):
        try:
            register(ep.name)(ep.load())
        except Exception as exc:  # a broken package must not break the built-ins; named when used
            import warnings

            warnings.warn(f"entry point {group}:{ep.name} ({ep.value}) could not be loaded: {exc}", stacklevel=2)


def model_names() -> tuple[str, ...]:
    """Every registered model name (the package's first, then the user's)."""
    _builtins()
    return tuple(_MODELS)


def method_names() -> tuple[str, ...]:
    """Every registered batching method name."""
    _builtins()
    return tuple(_METHODS)


def model_entry(name: str, key: str = "model.name") -> ModelEntry:
    """The registered model ``name``.

    Raises:
      ConfigError: naming ``key`` and the known models (and how to register one).
    """
    _builtins()
    if name not in _MODELS:
        raise ConfigError(f"{key}: unknown model {name!r}; choose one of {', '.join(_MODELS)} (or register "
                          "your own with @register_model in a file named by --module / modules:)")
    return _MODELS[name]


def method_class(name: str, key: str = "batching.method") -> type:
    """The registered method class ``name``.

    Raises:
      ConfigError: naming ``key`` and the known methods.
    """
    _builtins()
    if name not in _METHODS:
        raise ConfigError(f"{key}: unknown method {name!r}; choose one of {', '.join(_METHODS)} (or register "
                          "your own with @register_method in a file named by --module / modules:)")
    return _METHODS[name]


def registered_method(name: str) -> type | None:
    """The registered method class ``name``, or None (no error: e.g. a figure of a user's method
    whose module this process has not loaded)."""
    _builtins()
    return _METHODS.get(name)


def _module_fields(cls: type) -> dict[str, dataclasses.Field]:
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f for f in dataclasses.fields(cls)}


def model_hyperparameters(name: str) -> dict[str, Any]:
    """``{field: default}`` of a model's hyperparameters (its module fields but ``n_species``);
    a field without a default maps to ``dataclasses.MISSING``."""
    out = {}
    for k, f in _module_fields(model_entry(name).cls).items():
        if k in _NOT_HYPER or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[k] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[k] = f.default_factory()
        else:
            out[k] = dataclasses.MISSING
    return out


def model_field_types(name: str) -> dict[str, Any]:
    """``{field: annotation}`` of a model's hyperparameters (resolved where possible)."""
    import typing

    cls = model_entry(name).cls
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve is left unchecked
        hints = {}
    return {k: hints.get(k, Any) for k in model_hyperparameters(name)}


def plugin_provenance() -> dict[str, dict]:
    """The user's registered models and methods (not the package's): ``{"model:NAME" or
    "method:NAME": {"class", "file", "sha1"}}``, so a run records which code its plug-ins were."""
    import hashlib

    out = {}
    items = [(f"model:{n}", e.cls) for n, e in _MODELS.items()] + [(f"model:{n}:dense", c) for n, c in _DENSE.items()]
    items += [(f"method:{n}", c) for n, c in _METHODS.items()]
    for key, cls in items:
        if cls.__module__.startswith("gnn_batching."):
            continue
        path = _origin(cls)
        try:
            with open(path, "rb") as fh:
                digest = hashlib.sha1(fh.read()).hexdigest()
        except OSError:
            digest = None
        out[key] = {"class": cls.__qualname__, "file": path, "sha1": digest}
    return out


def load_modules(modules: Iterable[str], key: str = "modules") -> None:
    """Import the user's modules (they register datasets, models, methods).

    Each entry is a module name importable from the current folder (``my_plugins``) or a path to
    a ``.py`` file (``configs/my_plugins.py``). A module already imported is not imported again.

    Raises:
      ConfigError: naming ``key``, the entry and what went wrong (no such file, an import error,
        an exception raised while importing, with the file and line).
    """
    for entry in modules:
        _load_one(str(entry), key)


def _load_one(entry: str, key: str) -> None:
    if entry.endswith(".py") or os.sep in entry or "/" in entry:
        path = os.path.abspath(entry)
        if not os.path.isfile(path):
            raise ConfigError(f"{key}: {entry}: no such file")
        modname = "gnn_batching_user_" + "".join(c if c.isalnum() else "_" for c in path)
        if modname in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except ConfigError as exc:
            del sys.modules[modname]
            raise ConfigError(f"{key}: {entry}: {exc}") from None
        except BaseException as exc:
            del sys.modules[modname]
            raise ConfigError(f"{key}: {entry} does not import: {_where(exc, path)}") from None
        return
    if entry in sys.modules:
        return
    if os.getcwd() not in sys.path:  # a module next to the user's config or data
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(entry)
    except ModuleNotFoundError as exc:
        if exc.name == entry:
            raise ConfigError(f"{key}: no module named {entry!r} (a module importable from here, or a .py path)"
                              ) from None
        raise ConfigError(f"{key}: {entry} does not import: {_where(exc, None)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{key}: {entry}: {exc}") from None
    except BaseException as exc:
        raise ConfigError(f"{key}: {entry} does not import: {_where(exc, None)}") from None


def _where(exc: BaseException, path: str | None) -> str:
    """``ExcType: message (file, line N)`` at the deepest frame in the user's file."""
    import traceback

    line = ""
    if isinstance(exc, SyntaxError):
        line = f" ({exc.filename}, line {exc.lineno})"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        mine = [f for f in frames if path is None or os.path.abspath(f.filename) == path]
        if mine:
            line = f" ({mine[-1].filename}, line {mine[-1].lineno})"
    return f"{type(exc).__name__}: {exc}{line}"
