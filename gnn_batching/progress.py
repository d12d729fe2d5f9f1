"""Progress for long work: a tqdm bar on a terminal, periodic log lines otherwise.

Lines go to the ``gnn_batching`` logger at INFO level; the command line shows them on stderr,
a notebook or script shows them after ``logging.basicConfig(level=logging.INFO)``.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


class Progress:
    """``update(done, total)`` and ``note(text)``; logs a line at most every ``every`` s."""

    def __init__(self, label: str, total: int | None = None, enabled: bool = True, every: float = 5.0):
        self.label = label
        self.total = total
        self.enabled = enabled
        self.every = every
        self._last = 0.0
        self._t0 = time.perf_counter()
        self._start: int | None = None  # items already done at the first update (a resumed sweep)
        self._bar = None
        if enabled and sys.stderr.isatty() and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, file=sys.stderr, dynamic_ncols=True)

    def update(self, done: int, total: int | None = None, postfix: str = "") -> None:
        """Report ``done`` of ``total`` items, with an optional ``postfix`` (e.g. the loss)."""
        if not self.enabled:
            return
        total = total or self.total
        if self._start is None:
            self._start = done
        if self._bar is not None:
            self._bar.n = done
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.refresh()
            return
        now = time.perf_counter()
        if now - self._last >= self.every or (total and done >= total):
            self._last = now
            elapsed = now - self._t0
            eta = ""
            if total and done > self._start:  # the rate of THIS run: items done before it took no time
                eta = f", ETA {elapsed / (done - self._start) * (total - done):.0f} s"
            frac = f"{done}/{total}" if total else f"{done}"
            log.info(f"[{self.label}] {frac} ({elapsed:.0f} s{eta}) {postfix}".rstrip())

    __call__ = update

    def note(self, text: str) -> None:
        """Log a line without breaking the progress bar."""
        if self.enabled:
            msg = f"[{self.label}] {text}"
            if self._bar is not None:
                self._bar.write(msg, file=sys.stderr)
            else:
                log.info(msg)

    def close(self) -> None:
        """Finish the bar (safe to call twice)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
