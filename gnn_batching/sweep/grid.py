"""Sweep files: a base run config x grid axes -> one validated cell (run config) per combination.

Sweep file (YAML, validated strictly)::

    name: quickstart
    output_dir: results/quickstart
    base: {dataset: {...}, model: {...}, batching: {...}, train: {...}}   # or a path to a run config
    set: {batching.budget: paper}   # optional: dotted keys applied to base (e.g. over a base file)
    repeats: auto                   # optional: fresh processes per cell (auto: >= 3 per comparison)
    grid:
      batching.method: [static-pow2, static-64, dynamic]
      batching.batch_size: [16, 64]
      train.seed: [0, 1]

``repeats`` runs each cell again in fresh processes (same config, same seed) so that every
speed figure gets an interval over processes (:mod:`gnn_batching.sweep.intervals`); ``auto``
(default) gives every compared group at least three processes (seeds x repeats) when the grid
compares methods, else one. Cells run interleaved: the methods take turns, seeds and repeats in
the outer loops, in an order that changes from one process of a group to the next (a Williams
design, :func:`turn_order`: A B C, B C A, C A B, C B A, A C B, B A C), so neither a slow phase of
the machine, nor a turn's first place, nor the method run just before within a turn falls on one
method.

Every cell is validated before anything runs. A cell directory whose saved config differs from
the sweep's is refused, naming the cell and the keys (results of different settings never mix).
Running the cells is ``launch.py``'s job.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
from dataclasses import dataclass, field

from gnn_batching.config import (
    blame,
    check_override_key,
    config_changes,
    config_from_dict,
    parse_override,
    read_yaml,
    set_dotted,
    with_modules,
)
from gnn_batching.errors import ConfigError, UserError
from gnn_batching.rundir import CONFIG, is_finished
from gnn_batching.sweep.layout import REPEAT, cell_dir

SWEEP_KEYS = ("name", "output_dir", "base", "set", "grid", "report", "repeats")
MIN_PROCESSES = 3  # repeats: auto gives every compared group at least this many processes


@dataclass
class Cell:
    """One run of a sweep: its grid values, resolved config and run directory."""
    cell_id: str
    values: dict
    config: dict  # resolved run config (plain data)
    run_dir: str

    def state(self) -> str:
        """``done`` (has a summary), ``partial`` (started, no summary) or ``pending``."""
        if is_finished(self.run_dir):
            return "done"
        return "partial" if os.path.exists(self.run_dir) else "pending"


@dataclass
class Sweep:
    """A sweep file resolved into its cells (the cartesian product of ``grid`` over ``base``)."""
    name: str
    output_dir: str
    base: dict
    grid: dict
    source: str
    report: bool = True
    repeats: int = 1
    cells: list[Cell] = field(default_factory=list)


log = logging.getLogger(__name__)


def _cell_id(values: dict) -> str:
    parts = []
    for k, v in values.items():
        parts_k = k.split(".")
        short = parts_k[0] if parts_k[-1] == "name" else parts_k[-1].replace("batch_size", "bs")
        parts.append(f"{short}={v}")
    slug = "__".join(parts) or "single"
    return "".join(c if c.isalnum() or c in "=_-." else "_" for c in slug)


def load_sweep(path: str, overrides: list[str] | None = None, modules: list[str] | tuple = ()) -> Sweep:
    """Read and validate a sweep file.

    Args:
      path: the sweep YAML (keys ``name``, ``output_dir``, ``base``, ``grid``, ...).
      overrides: ``--set KEY=VALUE`` overrides applied to ``base``.
      modules: the user's modules or ``.py`` files (``--module``), added to the base's ``modules``.

    Returns:
      The sweep with every cell's config validated (a bad cell fails before any run).

    Raises:
      ConfigError: naming the file and key.
    """
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    for k in data:
        if k not in SWEEP_KEYS:
            raise ConfigError(f"{path}: {k}: unknown key; valid keys: {', '.join(SWEEP_KEYS)}")
    base = data.get("base") or {}
    if isinstance(base, str):
        base = read_yaml(os.path.join(os.path.dirname(os.path.abspath(path)), base))
    base = copy.deepcopy(base)
    sets = data.get("set") or {}
    if not isinstance(sets, dict):
        raise ConfigError(f"{path}: set: expected a mapping of dotted keys to values, e.g. {{batching.budget: paper}}")
    for k, v in sets.items():
        try:
            check_override_key(str(k))
        except ConfigError as e:
            raise ConfigError(f"{path}: set.{k}: {str(e).replace(f'--set {k}: ', '')}") from None
        set_dotted(base, str(k), v)
    grid = dict(data.get("grid") or {})
    output_dir = data.get("output_dir")
    name = data.get("name") or os.path.splitext(os.path.basename(path))[0]
    report = data.get("report", True)
    repeats = data.get("repeats", "auto")
    for o in overrides or []:
        k, v = parse_override(o)
        if k == "output_dir":
            output_dir = v
        elif k == "repeats":
            repeats = v
        elif k == "name":
            name = v
        elif k.startswith("grid."):
            check_override_key(k[5:])
            grid[k[5:]] = v if isinstance(v, list) else [v]
        else:
            check_override_key(k)
            set_dotted(base, k, v)
            if k in grid:  # an override of a grid axis pins it: said, so an axis never vanishes unseen
                log.info(f"--set {k}={v}: pins the grid axis {k} (was {grid.pop(k)}); grid.{k}=[...] replaces it")
    if not output_dir or not isinstance(output_dir, str):
        raise ConfigError(f"{path}: output_dir: required (where the sweep's runs and tables go)")
    for k, vals in grid.items():
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"{path}: grid.{k}: expected a non-empty list of values")
    base = with_modules(base, modules)
    base.setdefault("name", name)
    # an invalid value is named where it was given: a --set, the file's set:, else the file and key
    given = [(k[5:] if k.startswith("grid.") else k, f"--set {o}") for o, k in
             ((o, parse_override(o)[0]) for o in overrides or [])]

    def validated(cfg: dict, source: str):
        try:
            return config_from_dict(cfg, source)
        except ConfigError as exc:
            msg = blame(str(exc), source, given)
            raise ConfigError(msg if msg != str(exc) else blame(msg, source, sets, label=f"{path}: set")) from None

    validated(base, f"{path} (base)")  # validate before anything runs
    sw = Sweep(name=name, output_dir=output_dir, base=base, grid=grid, source=path, report=bool(report),
               repeats=resolve_repeats(repeats, grid, path))
    keys = list(grid)
    cells = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        cfg = copy.deepcopy(base)
        for k, v in values.items():
            set_dotted(cfg, k, v)
        cid = _cell_id(values)
        cfg["name"] = f"{name}-{cid}"
        resolved = validated(cfg, f"{path} (cell {cid})").to_dict()
        for r in range(sw.repeats):
            rid = cid if r == 0 else f"{cid}{REPEAT}{r}"
            cells.append((r, combo, Cell(rid, values, resolved, cell_dir(output_dir, rid))))
    sw.cells = [c for *_, c in sorted(cells, key=lambda t: _turns(keys, grid, t[0], t[1]))]
    ids = [c.cell_id for c in sw.cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: grid values produce duplicate cell names; use distinct values")
    return sw


def _seeds(grid: dict) -> int:
    """Processes a group gets per repeat: one per seed on the grid (a group pools its seeds)."""
    return max(len(grid.get("train.seed", [])), 1)


def resolve_repeats(value, grid: dict, path: str) -> int:
    """``repeats``: a positive int, or ``auto`` (at least :data:`MIN_PROCESSES` processes per
    compared group when the grid compares methods, counting its seeds; else 1)."""
    if value in (None, "auto"):
        if len(grid.get("batching.method", [])) < 2:
            return 1
        return max(1, -(-MIN_PROCESSES // _seeds(grid)))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: repeats: a positive integer or auto, got {value!r}")
    return value


def turn_order(n: int, place: int) -> list[int]:
    """The order in which ``n`` methods take their ``place``-th turn: a Williams design. Over any
    ``n`` consecutive places from 0 (a Latin square) each method runs at each place in the turn
    once; over ``n`` places (even ``n``) or ``2n`` (odd ``n``: the rows and their mirrors) each
    method also runs right after each other method equally often within a turn (across a turn's
    boundary it may follow itself)."""
    base = [0] + [(j + 1) // 2 if j % 2 else n - j // 2 for j in range(1, n)]  # 0, 1, n-1, 2, n-2, ...
    row = place % (n if n % 2 == 0 else 2 * n)
    order = [(b + row) % n for b in base]
    return order if row < n else [(b + row - n) % n for b in base][::-1]


def _turns(keys: list[str], grid: dict, repeat: int, combo: tuple) -> tuple:
    """Run order: repeats, then every axis but the method, the method fastest, in the order
    :func:`turn_order` gives the process's place in its group (``repeat x seeds + seed``), so no
    method always runs first in its turn or right after the same method within it. On this machine a fixed
    order (A B C A B C) put one method under two names 0.90x apart (7 turns of 8, intervals
    excluding 1; CI read 1.10x), docs/measurements.md."""
    pos = [grid[k].index(v) if v in grid[k] else 0 for k, v in zip(keys, combo)]
    at = dict(zip(keys, pos))
    outer = [p for k, p in zip(keys, pos) if k != "batching.method"]
    if "batching.method" not in at:
        return (repeat, *outer)
    place = repeat * _seeds(grid) + at.get("train.seed", 0)
    return (repeat, *outer, turn_order(len(grid["batching.method"]), place).index(at["batching.method"]))


def check_unchanged(sw: Sweep) -> None:
    """Refuse to mix results of different settings in one output directory."""
    for c in sw.cells:
        saved = os.path.join(c.run_dir, CONFIG)
        if os.path.exists(saved):
            diffs = config_changes(read_yaml(saved), c.config, saved)
            if diffs:
                raise UserError(
                    f"{sw.output_dir}: cell {c.cell_id} was run with different settings ({'; '.join(diffs[:4])}). "
                    "Use a new output_dir (--set output_dir=...) or delete that cell's folder."
                )
