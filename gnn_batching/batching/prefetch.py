"""A prefetching iterator: a background thread fills a bounded queue.

Exceptions from the producer are re-raised in the consumer at the point they occurred;
``close()`` (or garbage collection, or leaving a ``with`` block) stops the thread cleanly.
``wait_s`` accumulates the time the consumer spent blocked waiting for data.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetcher(Generic[T]):
    """Runs an iterator on a background thread, ``depth`` items ahead of the consumer.

    Exceptions in the producer are re-raised in the consumer; :meth:`close` stops the thread.

    Args:
      source: the iterator to run ahead (e.g. batch assembly plus the host-to-device copy).
      depth: how many items may wait in the queue.
    """
    def __init__(self, source: Iterator[T], depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._source = source
        self.wait_s = 0.0
        self.last_wait_s = 0.0
        self._done = False
        self._thread = threading.Thread(target=self._run, name="gnn-batching-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # re-raised in the consumer
            self._put(_Raised(exc))

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        t0 = time.perf_counter()
        item = self._q.get()
        self.last_wait_s = time.perf_counter() - t0
        self.wait_s += self.last_wait_s
        if item is _END:
            self._done = True
            self._thread.join()
            raise StopIteration
        if isinstance(item, _Raised):
            self._done = True
            self._thread.join()
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the producer thread and wait for it (at most 5 s)."""
        self._stop.set()
        self._done = True
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self._stop.set()
