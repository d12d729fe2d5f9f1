"""Sweeps on a cluster through ``submitit``: one job per cell, submitted as one Slurm job array.

``gnn-batching sweep SWEEP --launcher slurm`` submits every unfinished cell (finished cells are
skipped, partial ones continue from their checkpoint or are redone, exactly like a local sweep)
and waits for them, showing progress;
``--launcher submitit-local`` runs the same code path with submitit's local executor (what the
tests use, so the cluster path runs without a cluster). Each job runs ``gnn-batching run`` in a
fresh process; its output goes to the cell's log (``runs/<cell>.log``) and submitit's own files
to ``submitit/``. A job that Slurm preempts or times out is requeued by submitit
(:class:`CellJob` is ``Checkpointable``); the run saved a checkpoint on SIGTERM, and the requeued
``run --resume`` continues from it.
"""

from __future__ import annotations

import logging
import os
import subprocess

import submitit

from gnn_batching.errors import ConfigError
from gnn_batching.progress import Progress
from gnn_batching.sweep.grid import Sweep
from gnn_batching.sweep.launch import prepare_cell, resuming, start_sweep
from gnn_batching.sweep.layout import cell_log

log = logging.getLogger(__name__)

LAUNCHERS = {"slurm": "slurm", "submitit-local": "local"}


class CellJob(submitit.helpers.Checkpointable):
    """One cell as a submitit job: ``gnn-batching run`` in a child process, output in the cell's
    log. On preemption or time-out submitit calls :meth:`checkpoint` (inherited), which
    resubmits the same call."""

    def __call__(self, cmd: list[str], log_path: str) -> str:
        """Run the cell; raise (the job fails) when the run did not finish."""
        env = dict(os.environ, GNN_BATCHING_JOBS="1")
        with open(log_path, "a", encoding="utf-8") as fh:
            rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        if rc != 0:
            raise RuntimeError(f"gnn-batching run exited with {rc}; see {log_path}")
        return cmd[cmd.index("--out") + 1]


def parse_minutes(text: str | int) -> int:
    """``--time``: minutes (``90``) or Slurm's ``H:MM:SS`` / ``D-HH:MM:SS``.

    Raises:
      ConfigError: anything else (names the option).
    """
    s = str(text).strip()
    try:
        days, _, rest = s.rpartition("-")
        parts = [int(x) for x in rest.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 3:
            minutes = parts[0] * 60 + parts[1] + (parts[2] > 0)
        else:
            raise ValueError
        minutes += int(days) * 24 * 60 if days else 0
    except ValueError:
        raise ConfigError(f"--time: expected minutes or H:MM:SS, got {text!r}") from None
    if minutes < 1:
        raise ConfigError(f"--time must be at least one minute, got {text!r}")
    return minutes


def run_sweep_submitit(sw: Sweep, launcher: str = "slurm", partition: str | None = None, gpus_per_task: int = 0,
                       time: str | int = 60, array_parallelism: int = 64, cpus_per_task: int | None = None,
                       poll_s: float | None = None, force: bool = False) -> int:
    """Run every unfinished cell as a submitit job; 0 when all cells are finished, 1 if any failed.

    Args:
      sw: the sweep (:func:`gnn_batching.sweep.grid.load_sweep`).
      launcher: ``slurm`` or ``submitit-local``.
      partition: Slurm partition (``--partition``).
      gpus_per_task: GPUs per job; a cell uses them all with ``train.devices: all``.
      time: time limit per job (minutes or ``H:MM:SS``).
      array_parallelism: at most this many jobs of the array run at once.
      cpus_per_task: CPU cores per job (Slurm's default when None).
      poll_s: seconds between status polls (default 1 locally, 30 on Slurm).
      force: ``--force``: the output folder may hold files that are not the sweep's.

    Raises:
      ConfigError: an unknown launcher or a bad time limit.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher: unknown {launcher!r}; choose local, {', '.join(LAUNCHERS)}")
    minutes = parse_minutes(time)
    todo = start_sweep(sw, force)
    done = len(sw.cells) - len(todo)
    prog = Progress(f"sweep {sw.name}", total=len(sw.cells))
    if not todo:
        prog.note(f"{len(sw.cells)} cells, all done; nothing to submit")
        prog.update(done)
        prog.close()
        return 0
    folder = os.path.join(sw.output_dir, "submitit", "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=LAUNCHERS[launcher])
    executor.update_parameters(name=f"gnn-batching-{sw.name}", timeout_min=minutes, tasks_per_node=1, nodes=1,
                               gpus_per_node=gpus_per_task or None, cpus_per_task=cpus_per_task,
                               slurm_partition=partition, slurm_array_parallelism=array_parallelism)
    logs = {c.cell_id: cell_log(sw.output_dir, c.cell_id) for c in todo}
    resumed = resuming(todo)
    with executor.batch():
        jobs = [executor.submit(CellJob(), prepare_cell(c), logs[c.cell_id]) for c in todo]
    prog.note(f"{len(sw.cells)} cells, {done} already done, {len(todo)} submitted{resumed} through {launcher} "
              f"(job {jobs[0].job_id.split('_')[0]}; submitit files in {os.path.dirname(folder)})")
    prog.update(done)
    cell_of = {id(j): c for j, c in zip(jobs, todo)}
    failed: list[str] = []
    poll = poll_s if poll_s is not None else (1.0 if launcher == "submitit-local" else 30.0)
    try:
        for job in submitit.helpers.as_completed(jobs, poll_frequency=poll):
            cell = cell_of[id(job)]
            if job.exception() is None and cell.state() == "done":
                done += 1
                prog.update(done, postfix=cell.cell_id)
            else:
                failed.append(f"{cell.cell_id} (log {logs[cell.cell_id]}; job {job.job_id}: {job.paths.stderr})")
                prog.note(f"cell {cell.cell_id} failed; see {logs[cell.cell_id]}")
    finally:
        prog.close()
    if failed:
        log.error(f"{len(failed)} cell(s) failed: " + "; ".join(failed) + ". Re-run the same command to retry them")
        return 1
    return 0
