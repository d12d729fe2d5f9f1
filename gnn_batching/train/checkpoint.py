"""Checkpoints of a run (``orbax-checkpoint``), so a killed or preempted run resumes where it was.

Saved under the run directory's ``checkpoints/<steps done>/`` every ``train.checkpoint_every``
steps and every ``train.checkpoint_minutes`` minutes (whichever comes first; 0 turns a rule
off), the last ``train.checkpoint_keep`` kept. A checkpoint holds the train state (parameters,
optimizer state, step counter) and, as JSON, everything else the run needs to go on as if it had
never stopped: the per-step and evaluation records so far, the compile counts, the elapsed
training time, the restarts so far. The data order needs no state: epoch ``e`` is shuffled with
``default_rng([seed, e])``, so the loader's position is the number of steps done. Orbax writes a
checkpoint to a temporary folder and renames it when complete: a kill during a save leaves the
previous checkpoint intact.

Restoring never writes a record before it has succeeded. A checkpoint that cannot be read back
(emptied or truncated files, a missing part, metadata that does not match its step) is skipped
with a warning naming it, and the next older one is tried; the unreadable ones are then moved
to ``checkpoints-corrupt/`` (kept for inspection, out of the way of the steps that will be saved
again). When none can be read, :class:`CheckpointError` names each and why, and nothing in the
run directory has been touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp

from gnn_batching.errors import UserError
from gnn_batching.rundir import CHECKPOINTS, CORRUPT

log = logging.getLogger(__name__)



class CheckpointError(UserError):
    """No checkpoint of a run directory can be restored (each one named, with its problem)."""


class Checkpoints:
    """A run's checkpoint folder: when to save, save, restore the latest."""

    def __init__(self, out_dir: str, every_steps: int, every_minutes: float, keep: int):
        self.directory = os.path.abspath(os.path.join(out_dir, CHECKPOINTS))
        self.every_steps = int(every_steps)
        self.every_s = float(every_minutes) * 60.0
        self.saved = 0
        self.seconds = 0.0
        self._last = time.perf_counter()
        self._keep = max(1, int(keep))
        self._mgr: ocp.CheckpointManager | None = None  # created on first use: no folder for a run that never saves

    @property
    def _manager(self) -> ocp.CheckpointManager:
        if self._mgr is None:
            self._mgr = ocp.CheckpointManager(
                self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                                                     enable_async_checkpointing=False))
        return self._mgr

    @property
    def enabled(self) -> bool:
        """Whether any rule saves checkpoints."""
        return self.every_steps > 0 or self.every_s > 0

    def due(self, steps_done: int) -> bool:
        """Whether to save after ``steps_done`` steps."""
        if self.every_steps > 0 and steps_done % self.every_steps == 0:
            return True
        return self.every_s > 0 and time.perf_counter() - self._last >= self.every_s

    def save(self, steps_done: int, state, meta: dict) -> bool:
        """Save ``state`` and ``meta`` (JSON-able) as checkpoint ``steps_done``.

        Returns whether a checkpoint was written: orbax skips a step it already holds (e.g. a
        SIGTERM on a checkpoint step), and a skipped save is neither counted nor timed.
        """
        t0 = time.perf_counter()
        if steps_done in (self._manager.all_steps() or []):
            return False
        saved = self._manager.save(steps_done, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                       meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()
        if saved is False:
            return False
        self.saved += 1
        self.seconds += time.perf_counter() - t0
        self._last = time.perf_counter()
        return True

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, newest first (half-written ones are not listed)."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(self._manager.all_steps() or [], reverse=True)

    def restore(self, template, check=None) -> tuple[int, object, dict]:
        """The newest checkpoint that can be read back, as ``(step, state, meta)``.

        Args:
          template: the train state whose structure, shapes, dtypes and placement it takes.
          check: ``(step, meta) -> None`` raising ``ValueError`` when the metadata does not fit
            the step (records of another length, unknown counters): that checkpoint is then
            skipped like an unreadable one.

        Raises:
          CheckpointError: no checkpoint could be restored; nothing was written or moved.
        """
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        problems: list[str] = []
        unreadable: list[int] = []
        for step in self.steps():
            try:
                r = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                        meta=ocp.args.JsonRestore()))
                if not isinstance(r.meta, dict):
                    raise ValueError("its metadata is not a JSON object")
                if check is not None:
                    check(step, r.meta)
            except Exception as exc:  # any way a checkpoint can be unreadable: skip it, try the older one
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                problems.append(f"{os.path.join(self.directory, str(step))} ({why})")
                unreadable.append(step)
                log.warning(f"checkpoint {step} cannot be restored ({why}); trying the previous one")
                continue
            if unreadable:
                self._set_aside(unreadable)
            return step, r.state, r.meta
        raise CheckpointError(f"{self.directory}: no checkpoint can be restored: {'; '.join(problems)}. "
                              "Nothing was changed; run without --resume (and with --force) to start again")

    def _set_aside(self, steps: list[int]) -> None:
        """Move unreadable checkpoints to ``checkpoints-corrupt/`` (the run will save those steps again)."""
        self.close()
        self._mgr = None
        aside = os.path.join(os.path.dirname(self.directory), CORRUPT)
        os.makedirs(aside, exist_ok=True)
        for step in steps:
            dest = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.move(os.path.join(self.directory, str(step)), dest)
            log.warning(f"moved the unreadable checkpoint {step} to {dest}")

    def close(self) -> None:
        """Finish pending writes and release the manager."""
        if self._mgr is not None:
            self._mgr.close()
