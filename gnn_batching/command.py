"""The command line of this package as a child process: ``python -P -m gnn_batching.cli ...``.

``-P`` keeps the current directory off the import path: from inside another checkout, or any
folder holding a ``gnn_batching/`` of its own, a re-executed or launched process still runs the
code of the installation that launched it, not the folder's.
"""

from __future__ import annotations

import sys


def cli_command(*args: str) -> list[str]:
    """``[python, -P, -m, gnn_batching.cli, *args]`` with this interpreter."""
    return [sys.executable, "-P", "-m", "gnn_batching.cli", *args]
