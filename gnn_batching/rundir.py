"""The run directory, in one leaf module: its file names, where a run goes, and the checks made
before anything is written there. The run, the sweep launcher and the analysis all read it.

::

    <run>/
      config.yaml       the resolved config
      provenance.json   git commit, package versions, JAX backend/device, CPU, cores
      data.json         facts derived from the data: split sizes, target stats, budget, method
      steps.csv         one row per step: segment, timings, compile flags, real and padded sizes, loss
      evals.csv         one row per (step, split): RMSE, MAE (physical units), graphs evaluated
      epochs.csv        per-epoch batcher statistics (batches, graphs, shapes, fill, planning ms)
      precompile.csv    shapes compiled ahead of time, their seconds, whether after a restart
      status.json       complete, or interrupted / failed with the reason and steps done
      params.msgpack    the final parameters (flax.serialization.to_bytes)
      summary.json      the flat summary row, written LAST: its presence means the run finished
      checkpoints/      orbax checkpoints, from which ``run --resume`` continues
      checkpoints-corrupt/  unreadable checkpoints a resume skipped (kept for inspection)
      tensorboard/      TensorBoard event files (train.tensorboard: true)
"""

from __future__ import annotations

import datetime
import os

from gnn_batching.errors import UserError

CONFIG = "config.yaml"
PROVENANCE = "provenance.json"
DATA = "data.json"
STEPS = "steps.csv"
EVALS = "evals.csv"
EPOCHS = "epochs.csv"
PRECOMPILE = "precompile.csv"
STATUS = "status.json"
PARAMS = "params.msgpack"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
CORRUPT = "checkpoints-corrupt"
TENSORBOARD = "tensorboard"
RUN_FILES = (CONFIG, PROVENANCE, DATA, STEPS, EVALS, EPOCHS, PRECOMPILE, STATUS, PARAMS, SUMMARY, CHECKPOINTS,
             CORRUPT, TENSORBOARD)


def safe_name(name: str) -> str:
    """A run name usable as ONE path component: ``../../x`` stays inside ``results/runs``."""
    slug = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)
    while ".." in slug:
        slug = slug.replace("..", "_")
    slug = slug.strip(".")
    return slug or "run"


def default_run_dir(name: str) -> str:
    """``results/runs/<name>-<timestamp>``: where a run goes unless told otherwise."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("results", "runs", f"{safe_name(name)}-{stamp}")


def is_finished(run_dir: str) -> bool:
    """A run is finished once its ``summary.json`` exists (written last, atomically)."""
    return os.path.exists(os.path.join(run_dir, SUMMARY))


def has_checkpoint(run_dir: str) -> bool:
    """Whether ``run_dir`` holds at least one complete checkpoint (cheap: no orbax)."""
    d = os.path.join(run_dir, CHECKPOINTS)
    return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))


def check_out_dir(out: str, force: bool = False) -> None:
    """Refuse a run directory that holds a finished run, or anything a run does not write.

    ``force`` allows continuing or redoing a PARTIAL run in place (``--force``, ``--resume``,
    a resumed sweep cell): the folder may then hold only the files a run writes.

    Raises:
      UserError: naming the folder and what to do instead.
    """
    if is_finished(out):
        raise UserError(f"{out}: already holds a finished run ({SUMMARY}); choose another --out")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    present = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if not present:
        return
    foreign = [f for f in present if f not in RUN_FILES]
    if not force or foreign:
        what = f"files this run does not write ({', '.join(foreign[:5])})" if foreign else "a partial run"
        hint = "" if foreign else (", or pass --resume to continue the partial run from its checkpoint "
                                   "(--force redoes it from step 0)")
        raise UserError(f"{out}: exists and holds {what}; choose another --out{hint}")


def run_file(run_dir: str, name: str) -> str:
    """The path of file ``name`` of a run; a missing one is a UserError naming it."""
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        raise UserError(f"{path}: missing; the run directory is incomplete (re-run the sweep)")
    return path
