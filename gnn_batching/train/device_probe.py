"""The device-bound figure beside every run: the train step ALONE on a sample of the run's own
batches, after the last step (outside ``train_wall_s``).

A whole training step is assembly (host), the copy to the device, the dispatch and the device
work. :class:`DeviceProbe` keeps the arrays of the last ``train.device_probe_batches`` steady
steps (no compile, not the first of their shape in this process), then times the train step on
each again, with its arrays already on the device and the step already compiled: the median of
``repeats`` calls after a warm one. The summary reports

* ``device_step_ms``: the mean over the sample of those medians (per step: a call of K steps,
  ``train.steps_per_call``, is timed whole and divided by K, as the records divide it);
* ``host_overhead_fraction``: ``1 - sum(device-only ms) / sum(recorded combined ms)`` over the SAME
  steps: the share of a step that is not the device step (our host pipeline, copy, dispatch).

The probe calls the step on the final state and discards what it returns (the steps do not
donate their inputs), so the trained state is untouched.
"""

from __future__ import annotations

import collections
import time

import jax
import numpy as np

from gnn_batching.train.hooks import Hook
from gnn_batching.train.loop import Loop

NAN = float("nan")


class DeviceProbe(Hook):
    """Sample steady steps during training; time their device step alone after the last one.

    Args:
      train_step: the run's jitted train step ``(state, arrays) -> (state, metrics)``.
      batches: how many recent steady steps to keep and time (0: off, the figures are NaN).
      warmup_steps: steps before this are never sampled (``train.warmup_steps``).
      repeats: timed calls per batch (after one untimed call).
    """

    def __init__(self, train_step, batches: int, warmup_steps: int = 0, repeats: int = 3):
        self.train_step = train_step
        self.repeats = max(int(repeats), 1)
        self.warmup_steps = warmup_steps
        self.sample: collections.deque = collections.deque(maxlen=max(int(batches), 0))
        self._seen: set = set()
        self.result: dict = {"device_step_ms": NAN, "host_overhead_fraction": NAN, "device_probe_batches": 0}

    def after_step(self, loop: Loop, steps_done: int) -> None:
        """Keep the step just done if it is steady: past warm-up, no compile, a shape seen before."""
        last = loop.last
        key = last.get("key")
        first = key not in self._seen
        self._seen.add(key)
        k = int(last.get("k", 1))
        if self.sample.maxlen and steps_done - k >= self.warmup_steps and not last.get("compiled") and not first:
            self.sample.append((last.get("fn", self.train_step), last["arrays"], last["step_ms"], k))

    def finish(self, loop: Loop) -> None:
        """Time the sampled steps' device step alone; the figures go to ``loop.extra``."""
        if self.sample:
            device_ms, whole_ms = [], []
            for fn, arrays, step_ms, k in self.sample:  # a call of k steps: its time / k per step
                # on the device already where prefetch or a mesh put them there; else copy once here
                placed = jax.device_put(arrays) if loop.place is None else arrays
                jax.block_until_ready(fn(loop.state, placed))  # warm: dispatch caches
                times = []
                for _ in range(self.repeats):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(loop.state, placed))
                    times.append((time.perf_counter() - t0) * 1e3 / k)
                device_ms.append(float(np.median(times)))
                whole_ms.append(step_ms)
            self.result = {"device_step_ms": float(np.mean(device_ms)),
                           "host_overhead_fraction": float(1.0 - sum(device_ms) / sum(whole_ms)),
                           "device_probe_batches": len(device_ms)}
        self.sample.clear()
        loop.extra.update(self.result)

    def close(self) -> None:
        """Drop the kept batches (device memory)."""
        self.sample.clear()
