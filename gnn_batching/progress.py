"""Progress for long work: a tqdm bar on a terminal, periodic plain lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """``update(done, total)`` and ``note(text)``; prints to stderr at most every ``every`` s."""

    def __init__(self, label: str, total: int | None = None, enabled: bool = True, every: float = 5.0):
        self.label = label
        self.total = total
        self.enabled = enabled
        self.every = every
        self._last = 0.0
        self._t0 = time.perf_counter()
        self._bar = None
        if enabled and sys.stderr.isatty() and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, file=sys.stderr, dynamic_ncols=True)

    def update(self, done: int, total: int | None = None, postfix: str = "") -> None:
        if not self.enabled:
            return
        total = total or self.total
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
            if total and done:
                eta = f", ETA {elapsed / done * (total - done):.0f} s"
            frac = f"{done}/{total}" if total else f"{done}"
            print(f"[{self.label}] {frac} ({elapsed:.0f} s{eta}) {postfix}".rstrip(), file=sys.stderr, flush=True)

    __call__ = update

    def note(self, text: str) -> None:
        if self.enabled:
            msg = f"[{self.label}] {text}"
            if self._bar is not None:
                self._bar.write(msg, file=sys.stderr)
            else:
                print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
