"""Sweep files: a base run config x grid axes -> one validated cell (run config) per combination.

Sweep file (YAML, validated strictly)::

    name: quickstart
    output_dir: results/quickstart
    base: {dataset: {...}, model: {...}, batching: {...}, train: {...}}   # or a path to a run config
    set: {batching.budget: paper}   # optional: dotted keys applied to base (e.g. over a base file)
    grid:
      batching.method: [static-pow2, static-64, dynamic]
      batching.batch_size: [16, 64]
      train.seed: [0, 1]

Every cell is validated before anything runs. A cell directory whose saved config differs from
the sweep's is refused, naming the cell and the keys (results of different settings never mix).
Running the cells is ``launch.py``'s job.
"""

from __future__ import annotations

import copy
import itertools
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
from gnn_batching.sweep.layout import cell_dir

SWEEP_KEYS = ("name", "output_dir", "base", "set", "grid", "report")


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
    cells: list[Cell] = field(default_factory=list)


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
    for o in overrides or []:
        k, v = parse_override(o)
        if k == "output_dir":
            output_dir = v
        elif k == "name":
            name = v
        elif k.startswith("grid."):
            check_override_key(k[5:])
            grid[k[5:]] = v if isinstance(v, list) else [v]
        else:
            check_override_key(k)
            set_dotted(base, k, v)
            grid.pop(k, None)  # an override of a grid axis pins it
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
    sw = Sweep(name=name, output_dir=output_dir, base=base, grid=grid, source=path, report=bool(report))
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        cfg = copy.deepcopy(base)
        for k, v in values.items():
            set_dotted(cfg, k, v)
        cid = _cell_id(values)
        cfg["name"] = f"{name}-{cid}"
        resolved = validated(cfg, f"{path} (cell {cid})").to_dict()
        sw.cells.append(Cell(cid, values, resolved, cell_dir(output_dir, cid)))
    ids = [c.cell_id for c in sw.cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: grid values produce duplicate cell names; use distinct values")
    return sw


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
