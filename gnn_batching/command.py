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


CPUS_ENV = "GNN_BATCHING_CPUS"  # cores a launched process pins itself to ("0,1")
PARENT_ENV = "GNN_BATCHING_PARENT_PID"  # a launched process dies with this process (Linux)


def launch_env(env: dict, cores: list[int] | None) -> dict:
    """``env`` for a child started with :func:`cli_command` by a sweep: it pins itself to ``cores``
    and dies with this process (:func:`apply_launch_env`, run first thing in the child).

    Done by the child rather than in a ``preexec_fn``: a ``preexec_fn`` makes Python fork the
    parent with its threads (JAX's, in a notebook or a test), which can deadlock the child.
    """
    import os

    env = dict(env)
    env[PARENT_ENV] = str(os.getpid())
    if cores:
        env[CPUS_ENV] = ",".join(str(c) for c in cores)
    else:
        env.pop(CPUS_ENV, None)
    return env


def apply_launch_env() -> None:
    """In a launched child: pin to ``GNN_BATCHING_CPUS`` and die with ``GNN_BATCHING_PARENT_PID``."""
    import os
    import signal

    cpus = os.environ.get(CPUS_ENV)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])
    parent = os.environ.get(PARENT_ENV)
    if parent and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            return
        if os.getppid() != int(parent):  # the parent died before the line above: follow it now
            os.kill(os.getpid(), signal.SIGKILL)
