"""Dataset registry and the one entry point: ``load_dataset(spec) -> Dataset``.

A dataset is a function that returns structures with targets. Built-ins: ``qm9``,
``aflow``, ``aflow-synthetic`` and ``file:PATH``. Register your own::

    from gnn_batching import register_dataset

    @register_dataset("my-molecules")
    def my_molecules(limit=None, seed=0, **options):
        return [atoms, ...]   # ase.Atoms with the target in atoms.info["energy"]

Installed packages can also expose datasets through the entry point group
``gnn_batching.datasets`` (name = dataset name, value = such a function), and a config can
name a module to import first (``dataset.module``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gnn_batching.data.graphs import GraphRecipe
from gnn_batching.data.store import GraphStore, Splits, TargetStats, make_splits
from gnn_batching.study.split import study_splits
from gnn_batching.data.structures import StructureSet, from_atoms_list
from gnn_batching.config import DatasetSpec
from gnn_batching.errors import BadEntryError, ConfigError, DataError
from gnn_batching.progress import Progress

log = logging.getLogger(__name__)

CACHE_VERSION = "2"


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    fn: Callable[..., Any]
    description: str
    synthetic: bool = False
    default_graph: str = "fully-connected"
    # the function returns every structure whatever ``limit`` says (its cache is shared across
    # limits); False for every user function, since one that honours ``limit`` must be cached per limit
    ignores_limit: bool = False


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    *,
    description: str = "",
    synthetic: bool = False,
    default_graph: str = "fully-connected",
    ignores_limit: bool = False,
):
    """Decorator: make ``fn(limit=None, seed=0, **options)`` a dataset usable by name.

    ``fn`` returns a list of ``ase.Atoms`` (targets: numeric ``atoms.info`` entries) or a
    :class:`StructureSet`. If it returns more than ``limit`` structures, a seeded random
    subset is taken for you.
    """

    def deco(fn):
        _REGISTRY[name] = DatasetEntry(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0],
                                       synthetic, default_graph, ignores_limit)
        return fn

    return deco


def _load_entry_points() -> None:
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group="gnn_batching.datasets"):
            if ep.name not in _REGISTRY:
                register_dataset(ep.name)(ep.load())
    except Exception as exc:  # a broken plugin must not break the built-ins
        import warnings

        warnings.warn(f"could not load dataset entry points: {exc}", stacklevel=2)


def dataset_names() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY) + ["file:PATH"]


def describe(name: str) -> DatasetEntry:
    _load_entry_points()
    return _REGISTRY[name]


def recipe_of(spec: DatasetSpec, structures: StructureSet | None = None) -> GraphRecipe:
    """The graph recipe of a dataset spec: ``dataset.graph``, else the dataset's default.

    A ``file:`` dataset's default depends on what the files hold (``structures``): molecules get
    fully connected graphs, periodic crystals periodic kNN graphs (``dataset.k`` neighbours,
    images included: a fully connected graph would ignore the lattice, and a 1-atom crystal would
    get no edge). A mix is refused, naming an example of each, so the choice is the user's.

    Raises:
      DataError: a ``file:`` dataset mixing periodic and non-periodic structures, no graph chosen.
    """
    if spec.graph:
        kind = spec.graph
    elif spec.name.startswith("file:"):
        kind = "fully-connected" if structures is None else _file_default_graph(spec, structures)
    else:
        kind = _entry(spec).default_graph
    return GraphRecipe(kind, float(spec.cutoff), int(spec.k))


def _file_default_graph(spec: DatasetSpec, s: StructureSet) -> str:
    periodic = np.asarray(s.pbc).any(axis=1)
    if not periodic.any():
        return "fully-connected"
    if periodic.all():
        log.info(f"{spec.name}: {len(periodic)} periodic structures: periodic {spec.k}-NN graphs (images included; "
                 "dataset.graph chooses another builder)")
        return "knn"
    i, j = int(np.argmax(periodic)), int(np.argmax(~periodic))
    raise DataError(f"{spec.name}: {int(periodic.sum())} of {len(periodic)} structures are periodic (e.g. {s.ids[i]}), "
                    f"the others not (e.g. {s.ids[j]}); choose the graph with dataset.graph (--graph): radius or "
                    "knn (periodic images where a structure is periodic) or fully-connected (ignores periodicity)")


def _entry(spec: DatasetSpec) -> DatasetEntry:
    if spec.module:
        import sys

        if os.getcwd() not in sys.path:  # a module next to the user's config/data
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(spec.module)
        except ImportError as exc:
            raise ConfigError(f"dataset.module: cannot import {spec.module!r} ({exc})") from None
    _load_entry_points()
    if spec.name not in _REGISTRY:
        raise ConfigError(
            f"dataset.name: unknown dataset {spec.name!r}; known: {', '.join(dataset_names())} (your own: register it "
            "with @register_dataset in a file named by --module or dataset.module)"
        )
    return _REGISTRY[spec.name]


@dataclass
class Dataset:
    """A loaded dataset: store, chosen target, splits and training-split statistics."""

    spec: DatasetSpec
    store: GraphStore
    target: str
    unit: str
    splits: Splits
    stats: TargetStats

    @property
    def synthetic(self) -> bool:
        return self.store.synthetic

    def targets(self) -> np.ndarray:
        return self.store.targets[self.target]


def data_root() -> str:
    """Where graph stores and downloads are cached: ``$GNN_BATCHING_DATA``, else the per-user
    cache folder (``$XDG_CACHE_HOME/gnn_batching``, default ``~/.cache/gnn_batching``), so a
    notebook started in another folder reuses the QM9 store instead of rebuilding it."""
    if os.environ.get("GNN_BATCHING_DATA"):
        return os.environ["GNN_BATCHING_DATA"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gnn_batching")


def _file_fingerprint(paths: list[str]) -> list:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append([os.path.abspath(p), st.st_size, int(st.st_mtime)])
        except OSError:
            out.append([p, None, None])
    return out


def _source_fingerprint(spec: DatasetSpec) -> list:
    import glob

    if spec.name == "qm9" and not spec.source:
        from gnn_batching.data.qm9 import qm9pack_files

        return _file_fingerprint(qm9pack_files())
    path = spec.source or (spec.name[5:] if spec.name.startswith("file:") else None)
    if path:
        files = sorted(glob.glob(path)) if any(c in path for c in "*?[") else [path]
        if os.path.isdir(path):
            files = sorted(glob.glob(os.path.join(path, "*")))
        return _file_fingerprint(files + ([spec.targets_csv] if spec.targets_csv else []))
    return []


def _code_fingerprint(entry: DatasetEntry) -> str | None:
    """Hash of the source file defining a user's dataset function: editing it rebuilds the cache.
    (The built-ins' code is versioned by CACHE_VERSION instead.)"""
    import inspect

    if entry.fn.__module__.startswith("gnn_batching."):
        return None
    try:
        path = inspect.getsourcefile(entry.fn)
        with open(path, "rb") as fh:
            return f"{entry.fn.__module__}:{hashlib.sha1(fh.read()).hexdigest()}"
    except (OSError, TypeError):
        return f"{entry.fn.__module__}:{entry.fn.__qualname__}:unhashable"


def cache_key(spec: DatasetSpec) -> str:
    entry = None if spec.name.startswith("file:") else _entry(spec)
    ident = {
        "v": CACHE_VERSION,
        "name": spec.name,
        # a file's default graph depends on its contents (periodic or not): the key says "auto"
        "recipe": "auto" if _auto_graph(spec) else asdict(recipe_of(spec)),
        "limit": spec.limit if entry is not None and not entry.ignores_limit else None,
        "code": _code_fingerprint(entry) if entry is not None else None,
        "skip_bad": spec.skip_bad,
        "dft_type": spec.dft_type,
        "ef_range": list(spec.ef_range) if spec.ef_range else None,
        "target": spec.target if spec.name.startswith("file:") else None,
        "options": spec.options,
        "files": _source_fingerprint(spec),
    }
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in spec.name)[:40]
    return f"{slug}-{'auto' if _auto_graph(spec) else recipe_of(spec).key()}-{digest}"


def _auto_graph(spec: DatasetSpec) -> bool:
    return spec.name.startswith("file:") and not spec.graph


def load_structures(spec: DatasetSpec, progress: Progress | None = None) -> StructureSet:
    if spec.name.startswith("file:"):
        from gnn_batching.data.asefile import load_file

        return load_file(spec.name[5:], spec.target, spec.targets_csv, spec.skip_bad)
    entry = _entry(spec)
    out = entry.fn(limit=spec.limit, seed=spec.split_seed, spec=spec, progress=progress, **spec.options)
    if isinstance(out, StructureSet):
        return out
    try:
        atoms_list = list(out)
    except TypeError:
        raise DataError(f"dataset {spec.name!r}: its loader returned {type(out).__name__}, not a list of ase.Atoms "
                        "(or a StructureSet)") from None
    if not atoms_list:
        raise DataError(f"dataset {spec.name!r} returned no structures")
    from ase import Atoms

    wrong = next(((i, a) for i, a in enumerate(atoms_list) if not isinstance(a, Atoms)), None)
    if wrong is not None:
        raise DataError(f"dataset {spec.name!r}: entry {wrong[0]} is {type(wrong[1]).__name__}, not ase.Atoms "
                        "(a registered loader returns ase.Atoms with their targets in atoms.info)")
    from gnn_batching.data.asefile import targets_from_atoms

    targets = targets_from_atoms(atoms_list)
    keys = list(targets)
    if not targets:
        raise DataError(f"dataset {spec.name!r}: no numeric targets in atoms.info")
    default = spec.target or keys[0]
    return from_atoms_list(spec.name, atoms_list, targets, {k: "" for k in keys},
                           [f"{spec.name}:{i}" for i in range(len(atoms_list))], default,
                           synthetic=entry.synthetic)


def check_source(spec: DatasetSpec) -> None:
    """A named ``dataset.source`` or ``dataset.targets_csv`` must exist (``file:PATH`` is checked by
    its loader)."""
    import glob

    named = [("dataset.source", spec.source)] if spec.source and not spec.download else []
    if spec.targets_csv:
        named.append(("dataset.targets_csv", spec.targets_csv))
    for key, path in named:
        found = glob.glob(path) if any(c in path for c in "*?[") else ([path] if os.path.exists(path) else [])
        if not found:
            raise DataError(f"{key}: {path}: no such file or folder")


def load_store(spec: DatasetSpec, use_cache: bool = True, verbose: bool = True) -> GraphStore:
    """The full graph store of a dataset (before ``limit``), from the cache when valid."""
    check_source(spec)
    path = os.path.join(data_root(), "cache", cache_key(spec))
    if use_cache and os.path.exists(os.path.join(path, "meta.json")):
        return GraphStore.load(path)
    prog = Progress(f"loading {spec.name}", enabled=verbose)
    s = load_structures(spec, prog)
    s.validate()
    recipe = recipe_of(spec, s)
    prog.note(f"building {recipe.kind} graphs for {len(s)} structures")
    store = GraphStore.from_structures(s, recipe, prog)
    if use_cache:
        store.save(path)
    prog.close()
    return store


def limit_index(n: int, limit: int | None) -> np.ndarray:
    """A seeded (seed 0) random subset of ``limit`` graphs, in original order."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ConfigError(f"dataset.limit must be >= 1, got {limit}")
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def load_dataset(spec: DatasetSpec, use_cache: bool = True, verbose: bool = True) -> Dataset:
    """Load a dataset as graphs, with its splits and training-split target statistics.

    Args:
        spec: the ``dataset`` config section (name, source, graph recipe, limit, split, ...).
        use_cache: read and write the graph store cache (see :func:`data_root`).
        verbose: show progress on stderr.

    Returns:
        A :class:`Dataset`: ``store`` (columnar graphs), ``target``/``unit``, ``splits``
        (index arrays) and ``stats`` (mean and std of the target over the TRAINING split only).

    Raises:
        ConfigError: an unknown dataset, target or impossible split.
        DataError: a source that cannot be read or an entry that cannot be used (named).
    """
    store = load_store(spec, use_cache, verbose)
    if spec.limit is not None and len(store) > spec.limit:
        store = store.subset(limit_index(len(store), spec.limit))
    target = spec.target or store.default_target
    if target not in store.targets:
        raise ConfigError(f"dataset.target: {target!r} unknown for {spec.name}; available: {sorted(store.targets)}")
    values = store.targets[target]
    if not np.isfinite(values).all():
        i = int(np.argmax(~np.isfinite(values)))
        if not spec.skip_bad:
            raise BadEntryError(f"{spec.name}: entry {store.ids[i]} has a missing target {target!r}")
        keep = np.flatnonzero(np.isfinite(values))
        store.skipped.extend(f"{store.ids[j]}: missing target {target!r}" for j in np.flatnonzero(~np.isfinite(values)))
        store = store.subset(keep)
        values = store.targets[target]
    split = tuple(spec.split)
    splits = (study_splits(len(store), split, spec.split_seed) if spec.split_scheme == "study"
              else make_splits(len(store), split, spec.split_seed))
    stats = TargetStats.from_train(values[splits.train])
    return Dataset(spec, store, target, store.target_units.get(target, ""), splits, stats)


# ---------------------------------------------------------------------- built-ins


@register_dataset("qm9", description="QM9, all 130,831 molecules (qm9pack, offline); target U0 atomisation energy, eV",
                  ignores_limit=True)
def _qm9(limit=None, seed=0, spec=None, progress=None, **_):
    from gnn_batching.data import qm9

    if spec is not None and spec.source:
        if spec.source.endswith(".csv") or "*.csv" in spec.source:
            import glob

            return qm9.load_qm9pack(sorted(glob.glob(spec.source)), skip_bad=spec.skip_bad)
        return qm9.load_qm9_xyz(spec.source, skip_bad=spec.skip_bad)
    return qm9.load_qm9pack(skip_bad=bool(spec and spec.skip_bad))


@register_dataset("aflow", description="AFLOW crystals from an AFLUX download (--download) or your export (--source)",
                  default_graph="knn", ignores_limit=True)
def _aflow(limit=None, seed=0, spec=None, progress=None, **_):
    from gnn_batching.data import aflow

    if spec.download:
        pages = spec.source or os.path.join(data_root(), "aflow", "pages")
        client = aflow.AfluxClient(**spec.options.get("client", {}))
        entries = client.download(pages, progress=(lambda p, n: progress.note(f"page {p}: {n} entries"))
                                  if progress else None)
    elif spec.source:
        entries = aflow.load_export(spec.source)
    else:
        raise ConfigError("dataset.source: aflow needs an export file or folder (or dataset.download: true); "
                          "for offline benchmarks use aflow-synthetic")
    target = spec.target or aflow.DEFAULT_TARGET
    return aflow.structures_from_entries(entries, target, spec.skip_bad, spec.dft_type,
                                         tuple(spec.ef_range) if spec.ef_range else None)


@register_dataset("aflow-synthetic", description="SYNTHETIC AFLOW-like crystals (seeded; sizes follow AFLOW ICSD)",
                  synthetic=True, default_graph="knn")
def _aflow_synth(limit=None, seed=0, spec=None, progress=None, **_):
    from gnn_batching.data import synthetic

    return synthetic.generate(limit or 10_000, seed=0, progress=progress)
