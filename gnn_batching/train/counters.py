"""The running totals of one run, which ARE its checkpoint metadata.

A :class:`RunCounters` is plain data (``to_dict`` / ``from_dict``): the run loop updates it at
step boundaries, a checkpoint saves it next to the records, and a resumed run continues from
it, so a restarted run ends with the same counts as one that never stopped (restarts and the
work they repeated are counted apart).

The time-to-train rule (``train_wall_s``), the same for every method, so a preempted cell
compares fairly with one that ran straight through:

* every step's assembly + update, compiling and warm-up steps included,
* plus train-step shapes compiled ahead of time, the first time,
* minus what a restart repeated: compiling again a shape that was compiled before the restart
  (in a step: the step's compile seconds; ahead of time: the compile's wall seconds).

What restarts cost is reported apart as ``restart_overhead_s`` (those recompiles of train
steps plus restoring the checkpoint); ``train_wall_s_incl_restarts`` adds it back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class RunCounters:
    """Running totals of a run (see the module docstring for the time rule)."""

    steps_done: int = 0
    graphs_seen: int = 0  # real graphs trained on, over all devices and hosts
    train_wall_s: float = 0.0  # time-to-train by the rule above
    restarts: int = 0
    init_s: float = 0.0  # parameter initialisation of the first start (outside train_wall_s)
    restore_s: float = 0.0  # reading checkpoints back, summed over restarts
    checkpoints_saved: int = 0
    checkpoint_s: float = 0.0
    compile: dict = field(default_factory=dict)  # CompileMonitor.state()

    def to_dict(self) -> dict:
        """Plain, JSON-able data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunCounters:
        """The inverse of :meth:`to_dict` (unknown keys are refused: a checkpoint of another version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown run counters {unknown}")
        return cls(**d)

    def step(self, graphs: int, step_s: float, restart_compile_s: float) -> None:
        """Book one training step: its real graphs and its time by the rule."""
        self.steps_done += 1
        self.graphs_seen += int(graphs)
        self.train_wall_s += step_s - restart_compile_s

    def ahead(self, rows: list[dict]) -> None:
        """Book shapes compiled ahead of time (rows of ``precompile``): train shapes the first time
        count to time-to-train (recompiles after a restart are overhead, reported by the summary)."""
        self.train_wall_s += sum(r["compile_s"] for r in rows if r["label"] == "train" and not r.get("restart"))
