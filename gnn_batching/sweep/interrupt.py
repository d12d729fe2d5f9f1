"""Ctrl-C during a local sweep: stop cleanly, keep everything finished, say how to go on.

The cells run in their own process groups, so a Ctrl-C in the terminal reaches the sweep alone;
the sweep passes each one on to its running cells exactly once (:class:`SweepStop`):

1. the first: no new cell starts; each running cell finishes its current step, saves a
   checkpoint and exits (``gnn-batching run``'s own Ctrl-C, :class:`~gnn_batching.train.hooks.StopOnSignal`);
2. the second: the running cells stop at once (they still save a checkpoint where their records
   and state agree);
3. the third: the running cells are killed (a killed cell resumes from its newest checkpoint, or
   from step 0).

Finished cells (``summary.json``) are never touched; :func:`kept_lines` says what was kept. Running
the same command again resumes: finished cells are skipped, a stopped cell continues from its
checkpoint, with the records an uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

from gnn_batching.rundir import CHECKPOINTS, STATUS
from gnn_batching.sweep.grid import Sweep

INTERRUPTED = 130  # exit status of a command stopped by Ctrl-C (128 + SIGINT)


class SweepStop:
    """Counts the Ctrl-Cs (SIGINT) the sweep received between :meth:`install` and :meth:`restore`."""

    def __init__(self) -> None:
        self.count = 0
        self._passed = 0
        self._old = None

    def install(self) -> SweepStop:
        """Count SIGINTs from now on (in the main thread only; elsewhere Ctrl-C is not ours)."""
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.count += 1

    def restore(self) -> None:
        """Put back the SIGINT handler :meth:`install` replaced."""
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None

    def pass_on(self, procs: list[subprocess.Popen]) -> bool:
        """Pass the Ctrl-Cs received since the last call on to the running ``procs`` (the third and
        later kill them); True when a new one arrived."""
        new = self.count > self._passed
        while self._passed < self.count:
            self._passed += 1
            for proc in procs:
                if proc.poll() is None:
                    if self._passed >= 3:
                        proc.kill()
                    else:
                        proc.send_signal(signal.SIGINT)
        return new


def _newest_checkpoint(run_dir: str) -> int | None:
    d = os.path.join(run_dir, CHECKPOINTS)
    return max((int(n) for n in os.listdir(d) if n.isdigit()), default=None) if os.path.isdir(d) else None


def _steps_done(run_dir: str) -> int | None:
    try:
        with open(os.path.join(run_dir, STATUS), encoding="utf-8") as fh:
            return int(json.load(fh).get("steps_done"))
    except (OSError, ValueError, TypeError):
        return None


def kept_lines(sw: Sweep) -> list[str]:
    """What a stopped sweep kept: its finished cells, each partial cell's steps and checkpoint, and
    the cells not started (one line each, the partial cells named)."""
    done = [c for c in sw.cells if c.state() == "done"]
    partial = [c for c in sw.cells if c.state() == "partial"]
    pending = len(sw.cells) - len(done) - len(partial)
    lines = [f"kept {len(done)} finished cell(s) of {len(sw.cells)} in {sw.output_dir} (untouched); "
             f"{len(partial)} stopped mid-run, {pending} not started"]
    for c in partial:
        total = c.config.get("train", {}).get("num_train_steps")
        steps, ckpt = _steps_done(c.run_dir), _newest_checkpoint(c.run_dir)
        ran = f"stopped after {steps} of {total} steps" if steps is not None else "stopped before its first step"
        goes_on = (f"checkpoint at step {ckpt}: resumes there" if ckpt is not None
                   else "no checkpoint: redone from step 0")
        lines.append(f"  {c.cell_id}: {ran}; {goes_on}")
    return lines
