"""Atomic writes: a file is written to a temporary name in the same folder, then renamed.

A killed process therefore leaves either the old file or the complete new one, never half. The
file gets the mode a plain ``open()`` would give it (``0o666`` less the process umask, e.g. 0644),
not the temporary file's private 0600, so results can be shared.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def _umask() -> int:
    """The process umask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """UTF-8 text, written atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _finite(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps_json(obj: Any, indent: int | None = 1) -> str:
    """Strict JSON text: NaN/inf become null, NumPy scalars and arrays become plain values."""
    return json.dumps(_finite(obj), indent=indent, sort_keys=False, default=_default, allow_nan=False)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file, then rename)."""
    write_text_atomic(path, dumps_json(obj) + "\n")


def write_csv_atomic(path: str, df) -> None:
    """Write a pandas DataFrame as CSV to ``path`` atomically."""
    write_text_atomic(path, df.to_csv(index=False))


def _default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def text_table(head: list[str], rows: list[list[str]]) -> str:
    """Rows of strings as a left-aligned text table under ``head`` (columns two spaces apart)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def bounded_percent(value: float | None, spread: float | None = None, low: float = 0.0, high: float = 1.0,
                    mark: str = "*", word: str = "measured") -> str:
    """A share or an efficiency as a percentage, never an impossible one without comment.

    Inside ``[low, high]``: ``"12%"`` (``"12%±3%"`` with a ``spread``). Outside, which the quantity
    cannot be (a host share below 0 %, a fill above 100 %), the figure is a measurement's noise:
    shown clamped, with the figure beside it (``word``: ``measured``, ``predicted``) and ``mark``
    for the note that says why (``"~0% (measured -2%)*"``). NaN or None: ``"-"``.
    """
    if value is None or value != value:
        return "-"
    spread_ok = spread is not None and spread == spread and spread > 0
    measured = f"{value:.0%}" + (f"±{spread:.0%}" if spread_ok else "")
    if value < low:
        return f"~{low:.0%} ({word} {measured}){mark}"
    if value > high:
        return f"~{high:.0%} ({word} {measured}){mark}"
    return measured
