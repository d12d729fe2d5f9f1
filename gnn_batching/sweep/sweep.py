"""Sweeps: a base run config x grid axes -> one run directory per cell; resumable.

Sweep file (YAML, validated strictly)::

    name: quickstart
    output_dir: results/quickstart
    base: {dataset: {...}, model: {...}, batching: {...}, train: {...}}   # or a path to a run config
    grid:
      batching.method: [static-pow2, static-64, dynamic]
      batching.batch_size: [16, 64]
      train.seed: [0, 1]

Each cell runs in its own process (fresh JAX, isolated compile caches, no shared state) into
``output_dir/runs/<cell>/``; a cell is finished when its ``summary.json`` exists (written last,
atomically). Re-running skips finished cells and redoes unfinished ones. A cell directory whose
saved config differs from the sweep's is refused, naming the cell and the keys.
"""

from __future__ import annotations

import copy
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import yaml

from gnn_batching.errors import ConfigError, UserError
from gnn_batching.io import write_json_atomic, write_text_atomic
from gnn_batching.progress import Progress
from gnn_batching.train.config import config_from_dict, parse_override, read_yaml, set_dotted

SWEEP_KEYS = ("name", "output_dir", "base", "grid", "report")


@dataclass
class Cell:
    cell_id: str
    values: dict
    config: dict  # resolved run config (plain data)
    run_dir: str

    def state(self) -> str:
        if os.path.exists(os.path.join(self.run_dir, "summary.json")):
            return "done"
        return "partial" if os.path.exists(self.run_dir) else "pending"


@dataclass
class Sweep:
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


def load_sweep(path: str, overrides: list[str] | None = None) -> Sweep:
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
            grid[k[5:]] = v if isinstance(v, list) else [v]
        else:
            set_dotted(base, k, v)
            grid.pop(k, None)  # an override of a grid axis pins it
    if not output_dir or not isinstance(output_dir, str):
        raise ConfigError(f"{path}: output_dir: required (where the sweep's runs and tables go)")
    for k, vals in grid.items():
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"{path}: grid.{k}: expected a non-empty list of values")
    base.setdefault("name", name)
    config_from_dict(base, f"{path} (base)")  # validate before anything runs
    sw = Sweep(name=name, output_dir=output_dir, base=base, grid=grid, source=path, report=bool(report))
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        cfg = copy.deepcopy(base)
        for k, v in values.items():
            set_dotted(cfg, k, v)
        cid = _cell_id(values)
        cfg["name"] = f"{name}-{cid}"
        resolved = config_from_dict(cfg, f"{path} (cell {cid})").to_dict()
        sw.cells.append(Cell(cid, values, resolved, os.path.join(output_dir, "runs", cid)))
    ids = [c.cell_id for c in sw.cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: grid values produce duplicate cell names; use distinct values")
    return sw


def _diff(a, b, prefix="") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(_diff(va, vb, key + "."))
        elif va != vb:
            out.append(f"{key}: {va!r} -> {vb!r}")
    return out


def check_unchanged(sw: Sweep) -> None:
    """Refuse to mix results of different settings in one output directory."""
    for c in sw.cells:
        saved = os.path.join(c.run_dir, "config.yaml")
        if os.path.exists(saved):
            with open(saved, encoding="utf-8") as fh:
                old = yaml.safe_load(fh) or {}
            diffs = _diff(old, c.config)
            if diffs:
                raise UserError(
                    f"{sw.output_dir}: cell {c.cell_id} was run with different settings ({'; '.join(diffs[:4])}). "
                    "Use a new output_dir (--set output_dir=...) or delete that cell's folder."
                )


def _child_env(threads: int, jobs: int) -> dict:
    """Environment of a cell process. Threads are bounded by CPU pinning (``_preexec``), not by
    XLA flags: XLA:CPU sizes its thread pool from the process's CPU affinity (measured here:
    pinned to one core, its CPU time equals its wall time), and it has no thread-count flag
    (``--intra_op_parallelism_threads`` is a fatal "unknown flag"; without the dashes it was
    silently ignored). Each run records the cores it could use (``cpu_affinity``)."""
    env = dict(os.environ)
    env["GNN_BATCHING_JOBS"] = str(jobs)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _preexec(cores: list[int] | None):
    def fn():
        try:  # die with the sweep process (Linux), so a killed sweep leaves no orphan writing a cell
            import ctypes

            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
        except OSError:
            pass
        if cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)

    return fn


def _launch(cell: Cell, env: dict, cores: list[int] | None, log_path: str) -> subprocess.Popen:
    os.makedirs(cell.run_dir, exist_ok=True)
    cfg_path = os.path.join(cell.run_dir, "config.yaml")
    write_text_atomic(cfg_path, yaml.safe_dump(cell.config, sort_keys=False))
    for stale in ("steps.csv", "evals.csv", "epochs.csv", "status.json"):
        p = os.path.join(cell.run_dir, stale)
        if os.path.exists(p):
            os.unlink(p)
    log = open(log_path, "w", encoding="utf-8")
    cmd = [sys.executable, "-m", "gnn_batching.cli", "run", cfg_path, "--out", cell.run_dir, "--force"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_preexec(cores))
    proc.log = log  # type: ignore[attr-defined]
    return proc


def run_sweep(sw: Sweep, jobs: int = 1, dry_run: bool = False) -> int:
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    check_unchanged(sw)
    states = [c.state() for c in sw.cells]
    if dry_run:
        print(f"sweep {sw.name}: {len(sw.cells)} cells in {sw.output_dir}")
        for c, s in zip(sw.cells, states):
            print(f"  {s:<8} {c.cell_id}")
        return 0
    os.makedirs(sw.output_dir, exist_ok=True)
    write_json_atomic(os.path.join(sw.output_dir, "sweep.json"),
                      {"name": sw.name, "source": sw.source, "grid": sw.grid, "base": sw.base})
    todo = [c for c, s in zip(sw.cells, states) if s != "done"]
    done = len(sw.cells) - len(todo)
    ncores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = min(jobs, max(len(todo), 1))
    threads = max(1, ncores // jobs)
    core_sets = ([list(range(i * threads, (i + 1) * threads)) for i in range(jobs)] if jobs > 1 else [None])
    env = _child_env(threads, jobs)
    prog = Progress(f"sweep {sw.name}", total=len(sw.cells))
    prog.note(f"{len(sw.cells)} cells, {done} already done, {len(todo)} to run "
              f"with {jobs} job(s) x {threads} thread(s)")
    prog.update(done)
    running: dict[int, tuple[subprocess.Popen, Cell]] = {}
    failed: list[str] = []
    free = list(range(jobs))
    try:
        while todo or running:
            while todo and free:
                slot = free.pop(0)
                cell = todo.pop(0)
                log = os.path.join(cell.run_dir + ".log")
                running[slot] = (_launch(cell, env, core_sets[slot] if jobs > 1 else None, log), cell)
            time.sleep(0.2)
            for slot, (proc, cell) in list(running.items()):
                if proc.poll() is None:
                    continue
                proc.log.close()
                del running[slot]
                free.append(slot)
                if proc.returncode == 0 and cell.state() == "done":
                    done += 1
                    prog.update(done, postfix=cell.cell_id)
                else:
                    failed.append(cell.cell_id)
                    prog.note(f"cell {cell.cell_id} failed (exit {proc.returncode}); see {cell.run_dir}.log")
    finally:
        for proc, _ in running.values():
            proc.kill()
        prog.close()
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)}; re-run the same command to retry them",
              file=sys.stderr)
        return 1
    if sw.report:
        from gnn_batching.sweep.plots import plot_all
        from gnn_batching.sweep.report import write_report
        from gnn_batching.sweep.results import collect, format_comparison

        df = collect(sw.output_dir)  # once: the figures and the report reuse it
        print(format_comparison(df))
        plot_all(sw.output_dir, df=df)
        print(f"report: {write_report(sw.output_dir, df=df)}")
    return 0
