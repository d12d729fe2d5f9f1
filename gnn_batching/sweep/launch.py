"""Launching a sweep's cells: each in its own process, resumable, optionally in parallel.

Each cell runs ``gnn-batching run`` in a fresh process (fresh JAX, isolated compile caches, no
shared state) into ``output_dir/runs/<cell>/``. Re-running skips finished cells; an unfinished
one continues from its checkpoint, or is redone without one. This module only launches;
collecting, plotting and reporting are composed by the command line.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time

import yaml

from gnn_batching.command import cli_command, launch_env
from gnn_batching.errors import ConfigError
from gnn_batching.io import write_json_atomic, write_text_atomic
from gnn_batching.progress import Progress
from gnn_batching.rundir import CONFIG, EPOCHS, EVALS, STATUS, STEPS, has_checkpoint
from gnn_batching.sweep.folder import claim_output_dir
from gnn_batching.sweep.grid import Cell, Sweep, check_unchanged
from gnn_batching.sweep.interrupt import INTERRUPTED, SweepStop
from gnn_batching.sweep.layout import SWEEP_FILE, cell_log

log = logging.getLogger(__name__)


def _child_env(threads: int, jobs: int) -> dict:
    """Environment of a cell process. Threads are bounded by CPU pinning (``launch_env``), not by
    XLA flags: XLA:CPU sizes its thread pool from the process's CPU affinity (measured here:
    pinned to one core, its CPU time equals its wall time), and it has no thread-count flag
    (``--intra_op_parallelism_threads`` is a fatal "unknown flag"; without the dashes it was
    silently ignored). Each run records the cores it could use (``cpu_affinity``)."""
    env = dict(os.environ)
    env["GNN_BATCHING_JOBS"] = str(jobs)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env



def prepare_cell(cell: Cell) -> list[str]:
    """Write the cell's config, clear a partial run's records, return the command that runs it
    (``gnn-batching run ... --force --resume``: a partial cell continues from its latest
    checkpoint, or is redone in place when it has none). Every launcher uses it."""
    os.makedirs(cell.run_dir, exist_ok=True)
    cfg_path = os.path.join(cell.run_dir, CONFIG)
    write_text_atomic(cfg_path, yaml.safe_dump(cell.config, sort_keys=False))
    if not has_checkpoint(cell.run_dir):  # redone from step 0: an earlier attempt's records are stale
        for stale in (STEPS, EVALS, EPOCHS, STATUS):  # (with a checkpoint they are what resumes)
            p = os.path.join(cell.run_dir, stale)
            if os.path.exists(p):
                os.unlink(p)
    return cli_command("run", cfg_path, "--out", cell.run_dir, "--force", "--resume")


def _launch(cell: Cell, env: dict, cores: list[int] | None, log_path: str) -> subprocess.Popen:
    cmd = prepare_cell(cell)
    log_file = open(log_path, "a", encoding="utf-8")  # a resumed cell keeps its earlier attempts' output
    # the cell pins itself to its cores and dies with the sweep (a killed sweep leaves no orphan
    # writing a cell): no preexec_fn, which would fork this process with its threads. Its own process
    # group: a Ctrl-C in the terminal reaches the sweep alone, which passes it on once (interrupt.py)
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=launch_env(env, cores),
                            process_group=0)
    proc.log = log_file  # type: ignore[attr-defined]
    return proc


def start_sweep(sw: Sweep, force: bool = False) -> list[Cell]:
    """Refuse a folder that is not the sweep's (:mod:`~gnn_batching.sweep.folder`; ``force``:
    ``--force``) and changed settings, record the sweep file, and return the cells still to run
    (finished cells are skipped; a partial one continues from its checkpoint, or is redone)."""
    manifest = {"name": sw.name, "source": sw.source, "grid": sw.grid, "base": sw.base, "repeats": sw.repeats}
    claim_output_dir(sw.output_dir, manifest, force)
    check_unchanged(sw)
    states = [c.state() for c in sw.cells]
    _warn_other_grid(sw)
    os.makedirs(sw.output_dir, exist_ok=True)
    write_json_atomic(os.path.join(sw.output_dir, SWEEP_FILE), manifest)
    return [c for c, s in zip(sw.cells, states) if s != "done"]


def resuming(todo: list[Cell]) -> str:
    """What the start line adds about cells an earlier attempt left with a checkpoint (they
    continue from it; partial cells without one are redone from step 0)."""
    k = sum(has_checkpoint(c.run_dir) for c in todo)
    if not k:
        return ""
    return " (1 continues from its checkpoint)" if k == 1 else f" ({k} continue from their checkpoints)"


def _warn_other_grid(sw: Sweep) -> None:
    """Name it when the output folder already holds cells of another grid (e.g. a ``--set`` that
    changed a grid axis): the new cells will sit next to them, and results will pool both."""
    runs = os.path.join(sw.output_dir, "runs")
    if not os.path.isdir(runs):
        return
    ours = {c.cell_id for c in sw.cells}
    others = sorted(n for n in os.listdir(runs) if os.path.isdir(os.path.join(runs, n)) and n not in ours)
    if others:
        new = [c.cell_id for c in sw.cells if not os.path.isdir(c.run_dir)]
        log.warning(f"{sw.output_dir}: holds {len(others)} cell(s) of another grid ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}); {len(new)} new cell(s) of this grid will sit next to "
                    "them and `gnn-batching results` will show both. Use another output_dir "
                    "(--set output_dir=...) to keep them apart.")


def last_progress(log_path: str) -> str | None:
    """The last progress line of a running cell's log (``[run NAME] k/N (...) loss x, y ms/step``)."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln for ln in tail.splitlines() if ln.startswith("[run ")]
    return lines[-1].split("] ", 1)[-1] if lines else None


def describe_cells(sw: Sweep) -> str:
    """The sweep's cells and their states (``done``/``partial``/``pending``), one per line."""
    lines = [f"sweep {sw.name}: {len(sw.cells)} cells in {sw.output_dir}"]
    lines += [f"  {c.state():<8} {c.cell_id}" for c in sw.cells]
    return "\n".join(lines)


def gpu_env(env: dict, slot: int, gpus_per_job: int) -> dict:
    """``env`` with job ``slot``'s own GPUs (``CUDA_VISIBLE_DEVICES``: slot 1 of 2 per job gets 2,3).

    GPUs named in an inherited ``CUDA_VISIBLE_DEVICES`` are shared out in its order."""
    if gpus_per_job <= 0:
        return env
    inherited = [g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    ids = range(slot * gpus_per_job, (slot + 1) * gpus_per_job)
    picked = [inherited[i] for i in ids if i < len(inherited)] if inherited else [str(i) for i in ids]
    if len(picked) < gpus_per_job:
        raise ConfigError(f"--gpus-per-job {gpus_per_job} x job {slot + 1}: only {inherited} visible")
    return {**env, "CUDA_VISIBLE_DEVICES": ",".join(picked)}


def run_sweep(sw: Sweep, jobs: int = 1, gpus_per_job: int = 0, watch_s: float = 30.0, force: bool = False) -> int:
    """Run every unfinished cell; 0 when all cells are finished, 1 if any failed (named), 130 when
    stopped by Ctrl-C (:mod:`~gnn_batching.sweep.interrupt`: running cells finish their step and
    keep a checkpoint; re-running resumes).

    Args:
      sw: the sweep (from :func:`gnn_batching.sweep.grid.load_sweep`).
      jobs: cells run at once; each gets ``cores // jobs`` pinned cores.
      gpus_per_job: give each of the ``jobs`` its own GPUs (e.g. 4 jobs x 1 GPU on a 4-GPU node).
      watch_s: every this many seconds, log each running cell's last progress line (steps done,
        loss, step time), so a long cell shows it is alive.
      force: ``--force``: the output folder may hold files that are not the sweep's
        (:func:`~gnn_batching.sweep.folder.claim_output_dir`).

    Raises:
      ConfigError: if ``jobs < 1`` or the sweep file changed under a started sweep.
      UserError: if the output folder is not the sweep's.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    todo = start_sweep(sw, force)
    done = len(sw.cells) - len(todo)
    ncores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = min(jobs, max(len(todo), 1))
    threads = max(1, ncores // jobs)
    core_sets = ([list(range(i * threads, (i + 1) * threads)) for i in range(jobs)] if jobs > 1 else [None])
    env = _child_env(threads, jobs)
    for slot in range(jobs):  # every job's GPUs exist, before any cell starts
        gpu_env(env, slot, gpus_per_job)
    prog = Progress(f"sweep {sw.name}", total=len(sw.cells))
    prog.note(f"{len(sw.cells)} cells, {done} already done, {len(todo)} to run{resuming(todo)} "
              f"with {jobs} job(s) x {threads} thread(s)")
    prog.update(done)
    running: dict[int, tuple[subprocess.Popen, Cell]] = {}
    failed: list[str] = []
    free = list(range(jobs))
    watched = time.perf_counter()
    stop = SweepStop().install()  # Ctrl-C: start nothing new, the running cells stop after their step
    try:
        while (todo and not stop.count) or running:
            if stop.pass_on([proc for proc, _ in running.values()]):
                prog.note(f"Ctrl-C: {len(running)} running cell(s) finish their current step and keep a checkpoint; "
                          "no new cell starts (Ctrl-C again: stop them at once; a third time: kill them)")
            if running and time.perf_counter() - watched >= watch_s:
                watched = time.perf_counter()
                for _, cell in running.values():
                    line = last_progress(cell_log(sw.output_dir, cell.cell_id))
                    prog.note(f"running {cell.cell_id}: {line or 'starting'}")
            while todo and free and not stop.count:
                slot = free.pop(0)
                cell = todo.pop(0)
                running[slot] = (_launch(cell, gpu_env(env, slot, gpus_per_job), core_sets[slot] if jobs > 1 else None,
                                         cell_log(sw.output_dir, cell.cell_id)), cell)
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
                elif stop.count:
                    prog.note(f"cell {cell.cell_id} stopped (exit {proc.returncode})")
                else:
                    failed.append(cell.cell_id)
                    prog.note(f"cell {cell.cell_id} failed (exit {proc.returncode}); see "
                              f"{cell_log(sw.output_dir, cell.cell_id)}")
    finally:
        stop.restore()
        for proc, _ in running.values():
            proc.kill()
        prog.close()
    if stop.count:
        return INTERRUPTED
    if failed:
        log.error(f"{len(failed)} cell(s) failed: {', '.join(failed)}; re-run the same command to retry them")
        return 1
    return 0
