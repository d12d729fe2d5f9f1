"""``gnn-batching bench graphs``: structures per second of the graph builder with each
neighbour-list library (vesin, ASE), on the same structures, in the same run, and whether both
built the same graphs."""

from __future__ import annotations

import dataclasses
import platform
import time

import numpy as np

from gnn_batching.config import DatasetSpec
from gnn_batching.data.datasets import load_structures, recipe_of
from gnn_batching.data.graphs import NEIGHBOUR_BACKENDS, build_edges
from gnn_batching.errors import ConfigError


def run_graph_bench(spec: DatasetSpec, n: int = 1000, repeats: int = 1) -> dict:
    """Build the graphs of ``n`` structures of ``spec`` with every backend; the best of ``repeats``.

    Returns:
      One flat row: structures, builder, structures/s per backend, ``ratio`` (vesin over ASE)
      and ``equal`` (same edges, same vectors to 1e-6).

    Raises:
      ConfigError: a fully connected recipe (it uses no neighbour list).
    """
    spec = dataclasses.replace(spec, limit=n)
    s = load_structures(spec)
    recipe = recipe_of(spec, s)
    if recipe.kind == "fully-connected":
        raise ConfigError(f"bench graphs: {spec.name} builds fully connected graphs (no neighbour list); "
                          "use --graph knn or --graph radius")
    times, edges = {}, {}
    for backend in NEIGHBOUR_BACKENDS:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            edges[backend] = build_edges(s, recipe, backend=backend)
            best = min(best, time.perf_counter() - t0)
        times[backend] = best
    a, b = edges["vesin"], edges["ase"]
    equal = bool(np.array_equal(a.n_edge, b.n_edge) and np.array_equal(a.senders, b.senders)
                 and np.array_equal(a.receivers, b.receivers) and np.allclose(a.vectors, b.vectors, atol=1e-6))
    rate = {k: len(s) / v for k, v in times.items()}
    return {"dataset": spec.name, "builder": recipe.kind, "k": recipe.k if recipe.kind == "knn" else None,
            "cutoff": recipe.cutoff if recipe.kind == "radius" else None, "structures": len(s),
            "edges": int(a.n_edge.sum()), "vesin_structures_per_s": round(rate["vesin"], 1),
            "ase_structures_per_s": round(rate["ase"], 1), "ratio": round(rate["vesin"] / rate["ase"], 2),
            "equal": equal, "machine": platform.processor() or platform.machine()}


def format_graph_bench(row: dict) -> str:
    """The row of :func:`run_graph_bench` as text."""
    what = f"k={row['k']}" if row["builder"] == "knn" else f"cutoff={row['cutoff']}"
    return (f"{row['dataset']}: {row['structures']} structures, {row['builder']} ({what}), {row['edges']} edges\n"
            f"  vesin {row['vesin_structures_per_s']:>10,.0f} structures/s\n"
            f"  ase   {row['ase_structures_per_s']:>10,.0f} structures/s\n"
            f"  ratio {row['ratio']:.1f}x; same graphs: {'yes' if row['equal'] else 'NO'}")
