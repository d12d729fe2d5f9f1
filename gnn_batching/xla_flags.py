"""The GPU scatter-add trap of jaxlib 0.10.2 to 0.11.0, defused before the backend starts.

Those versions build LLVM with NVPTX's FTZ-correct lowering of float atomics: a float32
scatter-add on a CUDA GPU becomes a compare-and-swap retry loop instead of the native atomic,
up to ~450-2000x slower when many updates land on few rows (jax-ml/jax#38806, openxla/xla#46225).
Every message aggregation (``segment_sum`` to the receivers) and every graph readout of this suite
is such a scatter. The remedy is LLVM's own option restoring the native atomic,
``-nvptx-allow-ftz-atomics``, passed through ``XLA_FLAGS=--xla_backend_extra_options=...``; XLA
reads ``XLA_FLAGS`` once, when the backend starts.

:func:`apply` adds it on an affected jaxlib with a CUDA plugin installed, keeping every flag the
user set (an existing ``--xla_backend_extra_options`` gains one more entry), and never otherwise;
``GNN_BATCHING_SCATTER_FIX=0`` turns it off. When the backend has already started without it, it
raises (a slow run is not silently produced). What happened is recorded in provenance
(:func:`status`). Standard library only: it runs before JAX is imported.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata

from gnn_batching.errors import ConfigError

log = logging.getLogger(__name__)

OPTION = "-nvptx-allow-ftz-atomics"
EXTRA = "--xla_backend_extra_options"
AFFECTED = ((0, 10, 2), (0, 11, 0))  # first and last jaxlib with the CAS-loop lowering
CUDA_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-cuda12-pjrt", "jax-cuda13-pjrt")
SWITCH = "GNN_BATCHING_SCATTER_FIX"
_STATUS: dict = {"scatter_fix": "not checked"}


def _version(name: str) -> tuple[int, ...] | None:
    try:
        parts = metadata.version(name).split(".")[:3]
    except metadata.PackageNotFoundError:
        return None
    out = []
    for p in parts:
        digits = "".join(ch for ch in p if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def jaxlib_version() -> tuple[int, ...] | None:
    """The installed jaxlib's ``(major, minor, patch)``, None without jaxlib."""
    return _version("jaxlib")


def cuda_plugin() -> str | None:
    """The installed CUDA plugin of JAX, if any."""
    return next((p for p in CUDA_PLUGINS if _version(p) is not None), None)


def affected(version: tuple[int, ...] | None) -> bool:
    """Whether a jaxlib version lowers float32 GPU scatter-adds to a CAS loop."""
    return version is not None and AFFECTED[0] <= tuple(version[:3]) <= AFFECTED[1]


def merged(flags: str) -> str:
    """``XLA_FLAGS`` with the remedy added (unchanged when the option is there already)."""
    if OPTION in flags:
        return flags
    words = flags.split()
    for i, w in enumerate(words):
        if w.startswith(EXTRA + "="):
            words[i] = f"{w},{OPTION}" if w.split("=", 1)[1] else f"{w}{OPTION}"
            return " ".join(words)
    return " ".join([*words, f"{EXTRA}={OPTION}"])


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None)) if bridge is not None else False


def apply(environ: dict | None = None) -> str:
    """Add the remedy to ``environ`` (default ``os.environ``) where it is needed; returns (and
    records for provenance) what was done.

    Raises:
      ConfigError: an affected jaxlib with a CUDA plugin whose backend already started without
        the remedy (too late to add it): set the flag before anything imports JAX.
    """
    env = os.environ if environ is None else environ
    version, plugin = jaxlib_version(), cuda_plugin()
    flags = env.get("XLA_FLAGS", "")
    if env.get(SWITCH, "1") == "0":
        state = f"off ({SWITCH}=0)"
    elif not affected(version) or plugin is None:
        state = "not needed (" + ("no CUDA plugin" if plugin is None else
                                  f"jaxlib {'.'.join(map(str, version or ()))} unaffected") + ")"
    elif OPTION in flags:
        state = "set by the user (XLA_FLAGS)"
    elif _backend_started():
        raise ConfigError(f"jaxlib {'.'.join(map(str, version))} with {plugin}: the GPU scatter-add fix ({EXTRA}="
                          f"{OPTION}) must be in XLA_FLAGS before JAX starts its backend, and it has started; "
                          f"export XLA_FLAGS=\"$XLA_FLAGS {EXTRA}={OPTION}\" (or {SWITCH}=0 to run without it)")
    else:
        env["XLA_FLAGS"] = merged(flags)
        state = f"applied: {EXTRA}={OPTION} (jaxlib {'.'.join(map(str, version))}, {plugin})"
        log.info(f"GPU scatter-add: {state}; jax-ml/jax#38806")
    _STATUS["scatter_fix"] = state
    return state


def status() -> dict:
    """What :func:`apply` did in this process, for provenance."""
    return dict(_STATUS)
