"""Periodic actions of the training loop, called at step boundaries (Flax's "periodic actions").

The loop (:func:`gnn_batching.train.run.train_and_evaluate`) trains one step, books it, then calls each hook's
``after_step(loop, steps_done)`` in order; ``finish(loop)`` runs once after the last step and
``close()`` on every way out. A hook reads and writes the run only through the
:class:`~gnn_batching.train.loop.Loop` it is given (state, counters, records, monitor).

* :class:`Evaluate`    every ``train.eval_every`` steps and after the last: every graph of each split
* :class:`Board`       TensorBoard scalars (``train.tensorboard``)
* :class:`ShowProgress` the progress line
* :class:`Checkpoint`  ``train.checkpoint_every`` / ``checkpoint_minutes``
* :class:`StopOnSignal` SIGTERM or Ctrl-C stops the run at the end of the step (its checkpoint then matches)
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading

import jax

from gnn_batching.progress import Progress
from gnn_batching.train.checkpoint import Checkpoints
from gnn_batching.train.instruments import CompileMonitor, shape_key
from gnn_batching.train.loop import Loop
from gnn_batching.train.tensorboard import TensorBoard


class Hook:
    """A periodic action; every method is optional."""

    def after_step(self, loop: Loop, steps_done: int) -> None:
        """Called after step ``steps_done - 1`` has been trained and recorded (once per call when
        a call trains several steps: :mod:`~gnn_batching.train.calls`)."""

    def next_stop(self, steps_done: int) -> int | None:
        """The next step count after ``steps_done`` at which this hook must see the state (a call
        of several steps never runs past it); None: no such step."""
        return None

    def finish(self, loop: Loop) -> None:
        """Called once after the last step (also when a resumed run had no step left)."""

    def close(self) -> None:
        """Called on every way out (finished, interrupted, failed)."""


def evaluate(eval_step, state, loader, monitor: CompileMonitor, place=None, lead: int = 0) -> dict:
    """One ordered pass over a split: every graph exactly once, final partial batch included.

    ``place`` puts a batch's arrays where the step expects them (over the mesh of a
    data-parallel run); the counts then come from every host's devices. ``lead``: leading
    device axes to leave out of a compile's shape key.
    """
    sse = sae = 0.0
    n = 0.0
    graphs = 0
    for batch in loader.epoch(0):
        with monitor.track("eval", eval_step, key=shape_key(batch.arrays, lead)):
            out = eval_step(state, place(batch.arrays) if place else batch.arrays)
            out = jax.device_get(out)
        sse += float(out["sse"])
        sae += float(out["sae"])
        n += float(out["n"])
        graphs += batch.n_real_graphs
    one_host = loader.shard is None or loader.shard.n_processes == 1
    if round(n) != len(loader.index) or (one_host and graphs != round(n)):  # evaluation never skips
        raise RuntimeError(f"evaluation covered {round(n)} graphs of {len(loader.index)}")
    graphs = round(n)
    if graphs == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "graphs": 0}
    return {"rmse": math.sqrt(sse / n), "mae": sae / n, "graphs": graphs}


class Evaluate(Hook):
    """Evaluate every split every ``every`` steps and after the last step (0: only after the last)."""

    def __init__(self, every: int, splits: tuple[str, ...], board: TensorBoard | None = None):
        self.every, self.splits, self.board = int(every or 0), tuple(splits), board

    def _run(self, loop: Loop, steps_done: int) -> None:
        for split in self.splits:
            r = evaluate(loop.eval_step, loop.state, loop.eval_loaders[split], loop.monitor, loop.place, loop.lead)
            loop.records.evaluation({"step": steps_done, "split": split, "graphs_seen": loop.counters.graphs_seen,
                                     "train_wall_s": loop.counters.train_wall_s, **r})
            if self.board is not None:
                self.board.evaluation(steps_done, split, r)

    def next_stop(self, steps_done: int) -> int | None:
        """The next evaluation step."""
        return (steps_done // self.every + 1) * self.every if self.every else None

    def after_step(self, loop: Loop, steps_done: int) -> None:
        """Evaluate on the schedule (and after the last step)."""
        if steps_done == loop.total or (self.every and steps_done % self.every == 0):
            self._run(loop, steps_done)

    def finish(self, loop: Loop) -> None:
        """A resumed run that had no step left still ends with its final evaluation."""
        if not any(r["step"] == loop.total for r in loop.records.evals):
            self._run(loop, loop.total)


class Board(Hook):
    """Per-step TensorBoard scalars (evaluations are written by :class:`Evaluate`)."""

    def __init__(self, board: TensorBoard):
        self.board = board

    def after_step(self, loop: Loop, steps_done: int) -> None:
        """Loss, step time and graphs seen of each step of the call just done (a call of K steps:
        K points, as ``steps.csv`` has K rows)."""
        last = loop.last
        first = steps_done - len(last["losses"])
        for j, (loss, seen) in enumerate(zip(last["losses"], last["graphs_seen"])):
            self.board.step(first + j, loss, last["step_ms"], seen)

    def close(self) -> None:
        """Flush the event files."""
        self.board.close()


class ShowProgress(Hook):
    """The progress line (steps, loss, ms/step)."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def after_step(self, loop: Loop, steps_done: int) -> None:
        """Update the line."""
        last = loop.last
        self.progress.update(steps_done, postfix=f"loss {last['losses'][-1]:.4f}, {last['step_ms']:.1f} ms/step")

    def close(self) -> None:
        """End the line."""
        self.progress.close()


class Checkpoint(Hook):
    """Save a checkpoint when a rule says so (never after the last step: the run is then done)."""

    def __init__(self, ckpt: Checkpoints):
        self.ckpt = ckpt

    def next_stop(self, steps_done: int) -> int | None:
        """The next ``train.checkpoint_every`` step (time-based saves happen at call ends)."""
        every = self.ckpt.every_steps if self.ckpt.enabled else 0
        return (steps_done // every + 1) * every if every > 0 else None

    def after_step(self, loop: Loop, steps_done: int) -> None:
        """Save if due."""
        if steps_done < loop.total and self.ckpt.enabled and self.ckpt.due(steps_done):
            loop.save_checkpoint()

    def close(self) -> None:
        """Finish writes, release orbax."""
        self.ckpt.close()


class Interrupted(Exception):
    """Raised in the main thread on SIGTERM or SIGINT (Ctrl-C), so the run keeps its records on the way out."""


class StopOnSignal(Hook):
    """The first SIGTERM or SIGINT (Ctrl-C) stops the run at the end of its step (records, state and
    checkpoint then agree; after the last step the run finishes instead); a second one stops it at
    once. Installed by :meth:`installed` in the main thread."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None

    def after_step(self, loop: Loop, steps_done: int) -> None:
        """Raise :class:`Interrupted` if a stop was requested (not after the last step: the run is
        then finished, its summary written)."""
        if self.signum is not None and steps_done < loop.total:
            raise Interrupted(f"signal {self.signum}")

    @contextlib.contextmanager
    def installed(self):
        """The SIGTERM and SIGINT handlers for the block (only in the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.signum is not None:
                raise Interrupted(f"signal {signum} (twice)")
            self.signum = signum

        old = {s: signal.signal(s, handler) for s in self.SIGNALS}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)
