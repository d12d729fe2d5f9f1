"""``gnn-batching study plan``: planned train-step compilations of the study's static methods over
N steps, with the study's batch sequence and with ours, beside the study's own counters.

No training: the batches' padded shapes follow from the graph sizes alone, so the compile count
of a run is the number of distinct shapes it will meet (a compile per new shape; tested in the
runs). The study's sequence (:mod:`gnn_batching.batching.study`) reproduces its counters; ours
(every graph once per epoch, the last partial batch kept, numpy-seeded shuffles) is what
``gnn-batching run`` does.
"""

from __future__ import annotations

import numpy as np

from gnn_batching.batching import BatchingConfig, make_method
from gnn_batching.batching.study import our_static_sums, planned_compiles, study_split, study_static_sums
from gnn_batching.data import DatasetSpec, load_dataset
from gnn_batching.progress import Progress
from gnn_batching.reference import study_compiles

METHODS = ("static-pow2", "static-64")


def study_plan(spec: DatasetSpec, batch_sizes: list[int], steps: int = 100_000, seed: int = 0,
               verbose: bool = True) -> list[dict]:
    """One row per (method, batch size): ``study_order`` (our count with the study's sequence),
    ``ours`` (with our loader's), ``study`` (its published counter, None where it has none) and
    ``ratio`` (study_order / study)."""
    ds = load_dataset(spec, verbose=verbose)
    n_node, n_edge = ds.store.n_node.astype(np.int64), ds.store.n_edge.astype(np.int64)
    train, _ = study_split(len(ds.store))
    rows = []
    prog = Progress("study plan", total=len(batch_sizes) * len(METHODS), enabled=verbose)
    for bs in batch_sizes:
        sn, se = study_static_sums(n_node, n_edge, train, bs, steps)
        for method in METHODS:
            ours_method = make_method(BatchingConfig(method=method, batch_size=bs), ds.store, ds.splits.train, seed)
            on, oe = our_static_sums(ours_method, ds.splits.train, steps, seed)
            theirs = study_compiles(spec.name, method, bs) if steps == 100_000 else None
            mine = planned_compiles(sn, se, method)
            rows.append({"dataset": spec.name, "method": method, "batch_size": bs, "steps": steps,
                         "study_order": mine, "ours": planned_compiles(on, oe, method), "study": theirs,
                         "ratio": mine / theirs if theirs else None})
            prog.update(len(rows), postfix=f"{method} bs {bs}")
    prog.close()
    return rows


def format_study_plan(rows: list[dict]) -> str:
    """The rows as a text table with a note on what each column counts."""
    head = ["dataset", "method", "bs", "steps", "with the study's sequence", "with ours", "study's counter", "ratio"]
    body = [[r["dataset"], r["method"], str(r["batch_size"]), f"{r['steps']:,}", str(r["study_order"]), str(r["ours"]),
             "-" if r["study"] is None else f"{r['study']:.0f}", "-" if r["ratio"] is None else f"{r['ratio']:.3f}"]
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines) + (
        "\nplanned train-step compilations = distinct padded shapes over the steps. The study's sequence: its split "
        "(RandomState(0)), its stream (Python random.shuffle, seed 42, per pass), every bs-th graph dropped. Ours: "
        "every graph once per epoch, last partial batch kept. The study's counter: its 100k-step runs (published).")
