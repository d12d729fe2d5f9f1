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
"""

from __future__ import annotations

import os
import time

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """A run's checkpoint folder: when to save, save, restore the latest."""

    def __init__(self, out_dir: str, every_steps: int, every_minutes: float, keep: int):
        self.directory = os.path.abspath(os.path.join(out_dir, "checkpoints"))
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

    def save(self, steps_done: int, state, meta: dict) -> float:
        """Save ``state`` and ``meta`` (JSON-able) as checkpoint ``steps_done``; returns the seconds it took."""
        t0 = time.perf_counter()
        self._manager.save(steps_done, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                               meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()
        dt = time.perf_counter() - t0
        self.saved += 1
        self.seconds += dt
        self._last = time.perf_counter()
        return dt

    def latest(self) -> int | None:
        """Steps done at the latest complete checkpoint (None when there is none)."""
        if not os.path.isdir(self.directory):
            return None
        return self._manager.latest_step()

    def restore(self, template) -> tuple[object, dict]:
        """The latest checkpoint as ``(state, meta)``; ``template`` gives the state's structure,
        shapes, dtypes and placement."""
        step = self.latest()
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        r = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                meta=ocp.args.JsonRestore()))
        return r.state, r.meta

    def close(self) -> None:
        """Finish pending writes and release the manager."""
        if self._mgr is not None:
            self._mgr.close()


def has_checkpoint(out_dir: str) -> bool:
    """Whether ``out_dir`` holds at least one complete checkpoint (cheap: no orbax)."""
    d = os.path.join(out_dir, "checkpoints")
    return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))
