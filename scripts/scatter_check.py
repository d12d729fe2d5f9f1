"""A contended float32 scatter-add and our graph readout, timed in THIS process (its XLA_FLAGS
decide whether the GPU scatter-add remedy is on). scripts/gpu_checks.sh runs it twice, with
GNN_BATCHING_SCATTER_FIX=0 and without, so a lent GPU shows what the remedy does
(jaxlib 0.10.2-0.11.0: float32 scatter-adds as CAS loops, jax-ml/jax#38806).

    python scripts/scatter_check.py [--json]
"""

from __future__ import annotations

import json
import os
import sys
import time

from gnn_batching import xla_flags

STATE = xla_flags.apply()  # before JAX starts, as the command line does

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def _time(fn, *args, n: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(n):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n * 1e3


def main() -> dict:
    """Means of five calls after a warm one: a contended scatter (40,960 rows of 128 into 399 rows, all
    into one row) and a graph readout (a segment_sum of 64-wide node states into 128 graphs)."""
    rng = np.random.default_rng(0)
    table = jnp.zeros((399, 128), jnp.float32)
    upd = jnp.ones((40960, 128), jnp.float32)
    scat = jax.jit(lambda t, i, u: t.at[i].add(u))
    nodes = jnp.ones((128 * 18, 64), jnp.float32)
    gid = jnp.asarray(np.repeat(np.arange(128), 18))
    readout = jax.jit(lambda h, g: jax.ops.segment_sum(h, g, 128))
    out = {"backend": jax.default_backend(), "scatter_fix": STATE, "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "scatter_uniform_ms": _time(scat, table, jnp.asarray(rng.integers(0, 399, 40960)), upd),
           "scatter_one_row_ms": _time(scat, table, jnp.zeros(40960, jnp.int32), upd),
           "readout_ms": _time(readout, nodes, gid)}
    return out


if __name__ == "__main__":
    res = main()
    print(json.dumps(res) if "--json" in sys.argv else "\n".join(f"{k}: {v}" for k, v in res.items()))
