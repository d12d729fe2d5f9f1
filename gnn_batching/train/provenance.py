"""Provenance recorded next to every result: code version, packages, hardware."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata

from gnn_batching.allocator import active_allocator
from gnn_batching.plugins import plugin_provenance
from gnn_batching.xla_flags import status as scatter_fix_status

PACKAGES = ("gnn-batching", "jax", "jaxlib", "jraph", "flax", "optax", "numpy", "pandas", "ase")


def _git(*args: str) -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``unknown`` where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """Where a number came from: host, CPU, devices, package versions, git commit, allocator,
    CPU affinity and ``jax.print_environment_info`` output.
    """
    import jax

    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    devs = jax.devices()
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "device_kind": devs[0].device_kind if devs else None,
        "device_count": len(devs),
        "cpu_model": cpu_model(),
        "allocator": active_allocator(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "scatter_fix": scatter_fix_status()["scatter_fix"],  # jaxlib 0.10.2-0.11.0 GPU scatter-add remedy
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "hostname": platform.node(),
        "plugins": plugin_provenance(),  # the user's models and methods: file and hash
        "jax_environment": jax.print_environment_info(return_string=True),
    }
