"""What the training loop and its hooks share: the run's state, counters, records and compile
monitor (:class:`Loop`). The loop itself is :func:`gnn_batching.train.run.train_and_evaluate`;
its periodic actions are in :mod:`gnn_batching.train.hooks`."""

from __future__ import annotations

import dataclasses
import time

from gnn_batching.batching.loader import Loader
from gnn_batching.train.checkpoint import Checkpoints
from gnn_batching.train.counters import RunCounters
from gnn_batching.train.instruments import CompileMonitor
from gnn_batching.train.records import RunRecords
from gnn_batching.train.steps import TrainState


@dataclasses.dataclass
class Loop:
    """What the training loop and its hooks share (:mod:`gnn_batching.train.hooks`)."""

    total: int  # train.num_train_steps
    state: TrainState
    counters: RunCounters
    records: RunRecords
    monitor: CompileMonitor
    ckpt: Checkpoints
    eval_step: object
    eval_loaders: dict[str, Loader]
    place: object = None  # puts a batch's arrays over the mesh (data-parallel runs)
    lead: int = 0  # leading device axes of a batch (1 in a data-parallel run)
    segment: int = 0  # 0 for the first start, r after the r-th restart
    # the step just done: loss, step_ms, its arrays (as the step got them), compiled, shape key
    last: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)  # figures hooks add to the summary at the end

    def save_checkpoint(self) -> bool:
        """Checkpoint the state with the counters and records; True when written (not skipped)."""
        meta = self.counters.to_dict()
        meta["compile"] = self.monitor.state()
        meta["checkpoints_saved"] += 1  # this save, as the run that restores it will count it
        t0 = time.perf_counter()
        written = self.ckpt.save(self.counters.steps_done, self.state,
                                 {"counters": meta, "records": self.records.snapshot()})
        if written:
            self.counters.checkpoints_saved += 1
            self.counters.checkpoint_s += time.perf_counter() - t0
        return written
