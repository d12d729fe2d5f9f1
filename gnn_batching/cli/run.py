"""``gnn-batching run``: one training run, and what an interrupted run kept."""

from __future__ import annotations

import argparse
import sys

from gnn_batching.cli.common import INTERRUPTED, module_arg
from gnn_batching.errors import UserError
from gnn_batching.io import dumps_json


def cmd_run(a: argparse.Namespace) -> int:
    """``gnn-batching run``: train and evaluate one configuration into a run directory."""
    from gnn_batching.config import load_config
    from gnn_batching.train.run import run

    if a.distributed:  # before any other JAX call
        from gnn_batching.train.parallel import initialize_distributed

        initialize_distributed()
    cfg = load_config(a.config, a.set or [], modules=a.module)
    if a.resume and not a.out:
        raise UserError("run --resume: name the run directory to continue with --out")
    from gnn_batching.rundir import default_run_dir
    from gnn_batching.train.hooks import Interrupted

    out = a.out or default_run_dir(cfg.name)  # named here: an interrupted run's resume command names it
    try:
        summary = run(cfg, out_dir=out, force=a.force, resume=a.resume)
    except (KeyboardInterrupt, Interrupted):
        print(_run_interrupted(out, a.argv), file=sys.stderr)
        return INTERRUPTED
    print(dumps_json(summary))
    return 0


def _resume_command(argv: list[str], out: str) -> str:
    """The ``gnn-batching run`` command line ``argv`` continuing in ``out`` (``--out OUT --resume``)."""
    import shlex

    kept, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == "--out":
            skip = True
        elif x not in ("--force", "--resume") and not x.startswith("--out="):
            kept.append(x)
    return shlex.join(["gnn-batching", *kept, "--out", out, "--resume"])


def _run_interrupted(out: str, argv: list[str]) -> str:
    """What an interrupted run kept (from its ``status.json``) and the command that resumes it."""
    import json
    import os

    from gnn_batching.rundir import CHECKPOINTS, STATUS

    resume = _resume_command(argv, out)
    try:
        with open(os.path.join(out, STATUS), encoding="utf-8") as fh:
            st = json.load(fh)
    except (OSError, ValueError):
        return f"interrupted before the run started: nothing was written to {out}\nresume: {resume}"
    done = st.get("steps_done", 0)
    ckpts = os.path.join(out, CHECKPOINTS)
    newest = max((int(n) for n in os.listdir(ckpts) if n.isdigit()), default=None) if os.path.isdir(ckpts) else None
    if newest is not None:
        where = f"checkpoint at step {newest}: the resumed run continues there"
    else:
        why = st.get("checkpoint_error", "train.checkpoint_every and checkpoint_minutes are off, or no step was done")
        where = f"no checkpoint ({why}): the resumed run starts again from step 0"
    return (f"interrupted after {done} step(s): kept {out} (the records of those steps: steps.csv, evals.csv, "
            f"status.json); {where}\nresume: {resume}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``run``."""
    r = sub.add_parser("run", help="one training run from a YAML config")
    r.add_argument("config", help="YAML config, e.g. configs/smoke.yaml")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, repeatable")
    module_arg(r)
    r.add_argument("--out", help="run directory (default: results/runs/<name>-<time>)")
    r.add_argument("--force", action="store_true",
                   help="redo a PARTIAL run in --out in place (a finished run or foreign files are never replaced)")
    r.add_argument("--resume", action="store_true",
                   help="continue the partial run in --out from its latest checkpoint (from step 0 if it has none); "
                        "settings other than the run started with are refused")
    r.add_argument("--distributed", action="store_true",
                   help="join a multi-host run (jax.distributed.initialize: Slurm and Open MPI detected; else set "
                        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    r.set_defaults(fn=cmd_run)
