"""Several training steps per dispatch (``train.steps_per_call: K``).

On an accelerator a small step is often bound by launching it, not by its arithmetic. A call of
K steps is one jitted ``jax.lax.scan`` over K batches of ONE padded shape, stacked on a leading
axis (:func:`multi_step`), so the host dispatches once per K steps. The loop forms calls with
:func:`next_call`: K consecutive batches of the stream when they share a shape and no hook must
see the state before the K-th (an evaluation or checkpoint step, the last step); otherwise one
step alone. So each shape compiles at most two programs (K steps and one step), evaluations and
checkpoints fall on call boundaries, and a resumed run forms the same calls as an uninterrupted
one. Every step keeps its row in ``steps.csv``: the call's time divided evenly, ``call`` (its
first step) and ``call_steps`` (K) mark it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from gnn_batching.train.instruments import shape_key


def resolve_steps_per_call(setting: int | str, backend: str, n_devices: int = 1) -> int:
    """``train.steps_per_call`` as a number: ``auto`` is 8 on an accelerator and 1 on the CPU;
    data-parallel runs take one step per call."""
    if n_devices > 1:
        return 1
    if setting == "auto":
        return 1 if backend == "cpu" else 8
    return int(setting)


def multi_step(train_step: Callable) -> Callable:
    """``(state, stacked) -> (state, {"loss": (K,)})``: ``train_step`` over the K batches of
    ``stacked`` (leading axis K) in order, in one jitted ``lax.scan``."""

    @jax.jit
    def run(state, stacked):
        def body(s, batch):
            s, metrics = train_step(s, batch)
            return s, metrics["loss"]

        state, losses = jax.lax.scan(body, state, stacked)
        return state, {"loss": losses}

    return run


def stack(arrays: list) -> object:
    """Batches' arrays stacked on a new leading axis (NumPy on the host, jnp where on a device)."""
    def leaf(*xs):
        return np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs)

    return jax.tree_util.tree_map(leaf, *arrays)


class Lookahead:
    """An iterator of batches that can be looked ahead into; counts the time the source (a
    prefetcher) made it wait (``waited_s``)."""

    def __init__(self, source: Iterator):
        self.source = source
        self.buffer: collections.deque = collections.deque()
        self.waited_s = 0.0

    def _pull(self):
        item = next(self.source)
        self.waited_s += getattr(self.source, "last_wait_s", float("nan"))
        return item

    def __next__(self):
        return self.buffer.popleft() if self.buffer else self._pull()

    def peek(self, n: int) -> list:
        """The next ``n`` items, left in place."""
        while len(self.buffer) < n:
            self.buffer.append(self._pull())
        return list(self.buffer)[:n]

    def close(self) -> None:
        """Close the source (a prefetch thread)."""
        if hasattr(self.source, "close"):
            self.source.close()


def next_call(source: Lookahead, steps_done: int, total: int, k: int, stops: list[int | None],
              lead: int = 0) -> list:
    """The batches of the next call: ``k`` of them if they share a padded shape and ``k`` steps end
    at or before every ``stop`` (steps at which a hook must see the state) and ``total``; else one."""
    first = next(source)
    room = min([total - steps_done] + [s - steps_done for s in stops if s is not None and s > steps_done])
    if k > 1 and room >= k:
        key = shape_key(first.arrays, lead)
        if all(shape_key(b.arrays, lead) == key for b in source.peek(k - 1)):
            return [first] + [next(source) for _ in range(k - 1)]
    return [first]
