"""Restart scenarios shared by tests/test_restart.py (in-process, one device) and its 4-device
case (``python tests/restart_cases.py METHOD OUT_DIR`` in a fresh process with 4 simulated CPU
devices, printing JSON).

A run is "killed" by a hook that raises at a given step (no checkpoint is saved on the way out,
as with SIGKILL), then resumed with ``train_and_evaluate(..., resume=True)``.
"""

from __future__ import annotations

import json
import os
import sys

import flax.serialization
import jax
import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")
# 24 steps, checkpoints at 6, 12, 18 (the last 2 kept), evaluations at 8, 16, 24: a kill at step 14
# resumes from checkpoint 12, which comes AFTER an evaluation (8) and before one (16)
TINY = ["dataset.name=aflow-synthetic", "dataset.limit=80", "model.latent_size=8", "model.message_passing_steps=2",
        "train.num_train_steps=24", "train.checkpoint_every=6", "train.eval_every=8", "batching.batch_size=8"]


class Killed(RuntimeError):
    """Stands in for SIGKILL: the run stops where it is, no checkpoint saved on the way out."""


def config(method: str, extra: list[str] = ()):
    from gnn_batching.config import load_config

    vmap = ["batching.autobatch_mode=vmap"] if method == "autobatch" else []  # its own slots (ragged: packed)
    return load_config(SMOKE, [*TINY, f"batching.method={method}", *vmap, *extra])


def killed_run(cfg, out: str, at: int) -> None:
    """Train ``cfg`` in ``out`` until ``at`` steps are done, then stop as if killed."""
    from gnn_batching.train import hooks
    from gnn_batching.train.run import train_and_evaluate

    original = hooks.ShowProgress.after_step

    def kill(self, loop, steps_done):
        original(self, loop, steps_done)
        if steps_done == at:
            raise Killed(f"killed at step {at}")

    hooks.ShowProgress.after_step = kill
    try:
        train_and_evaluate(cfg, out, verbose=False)
    except Killed:
        pass
    else:  # pragma: no cover - the scenario is broken
        raise AssertionError("the run was not killed")
    finally:
        hooks.ShowProgress.after_step = original


def params(out: str):
    """The final parameters of a finished run."""
    with open(os.path.join(out, "params.msgpack"), "rb") as fh:
        return flax.serialization.msgpack_restore(fh.read())


def max_rel_diff(a, b) -> float:
    """Largest relative difference between two parameter trees."""
    return max(float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def straight_and_resumed(method: str, base: str, extra: list[str] = (), kill_at: int = 14) -> tuple[dict, dict]:
    """The summaries of an uninterrupted run and of a killed-then-resumed one (in ``base``)."""
    from gnn_batching.train.run import train_and_evaluate

    cfg = config(method, extra)
    straight = train_and_evaluate(cfg, os.path.join(base, "straight"), verbose=False)[1]
    killed_run(cfg, os.path.join(base, "resumed"), kill_at)
    resumed = train_and_evaluate(cfg, os.path.join(base, "resumed"), verbose=False, resume=True)[1]
    return straight, resumed


def frames(out: str) -> dict[str, pd.DataFrame]:
    """A run's records."""
    return {n: pd.read_csv(os.path.join(out, f"{n}.csv")) for n in ("steps", "evals", "precompile")}


if __name__ == "__main__":
    method, base = sys.argv[1], sys.argv[2]
    s, r = straight_and_resumed(method, base, ["train.devices=4"])
    print(json.dumps({"straight": s, "resumed": r,
                      "params_rel": max_rel_diff(params(os.path.join(base, "resumed")),
                                                 params(os.path.join(base, "straight")))}))
