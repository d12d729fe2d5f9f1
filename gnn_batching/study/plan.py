"""``gnn-batching study plan``: planned train-step compilations of the study's static methods over
N steps, with the study's batch sequence and with ours, beside the study's own counters.

No training: the batches' padded shapes follow from the graph sizes alone, so the compile count
of a run is the number of distinct shapes it will meet (a compile per new shape; tested in the
runs). The study's sequence (``dataset.split_scheme: study`` with ``batching.study_order: true``,
:mod:`gnn_batching.study.order`: its split, its stream, the first batch only initialising the
model) reproduces its counters; ours (every graph once per epoch, the
last partial batch kept, numpy-seeded shuffles) is what ``gnn-batching run`` does by default. Both
are planned by the same code a run uses.
"""

from __future__ import annotations

from gnn_batching.batching import BatchingConfig, Loader, make_method
from gnn_batching.data import DatasetSpec, load_dataset
from gnn_batching.io import text_table
from gnn_batching.progress import Progress
from gnn_batching.study.order import STUDY_SEED, StudyOrder, planned_compiles, planned_shapes
from gnn_batching.study.published import study_compiles
from gnn_batching.study.split import study_splits

METHODS = ("static-pow2", "static-64")


def _epochs(loader_or_order):
    e = 0
    while True:
        yield loader_or_order.plan(e)
        e += 1


def study_plan(spec: DatasetSpec, batch_sizes: list[int], steps: int = 100_000, seed: int = 0,
               verbose: bool = True) -> list[dict]:
    """One row per (method, batch size): ``study_order`` (our count with the study's split and
    ``batching.study_order``, exactly what a run with both plans), ``ours`` (our split and loader),
    ``study`` (its published counter, None where it has none) and ``ratio`` (study_order / study)."""
    ds = load_dataset(spec, verbose=verbose)
    theirs_split = study_splits(len(ds.store), tuple(spec.split), spec.split_seed)
    rows = []
    prog = Progress("study plan", total=len(batch_sizes) * len(METHODS), enabled=verbose)
    for bs in batch_sizes:
        for name in METHODS:
            cfg = BatchingConfig(method=name, batch_size=bs)
            study_method = make_method(cfg, ds.store, theirs_split.train, seed)
            mine = planned_compiles(planned_shapes(
                _epochs(StudyOrder(study_method, theirs_split.train, STUDY_SEED + seed, init_batch=True)), steps))
            ours_method = make_method(cfg, ds.store, ds.splits.train, seed)
            loader = Loader(ds.store, ds.store.targets[ds.target], ds.splits.train, ours_method, shuffle=True,
                            seed=seed)
            ours = planned_compiles(planned_shapes(_epochs(loader), steps))
            theirs = study_compiles(spec.name, name, bs, steps)
            rows.append({"dataset": spec.name, "method": name, "batch_size": bs, "steps": steps,
                         "study_order": mine, "ours": ours, "study": theirs,
                         "ratio": mine / theirs if theirs else None})
            prog.update(len(rows), postfix=f"{name} bs {bs}")
    prog.close()
    return rows


def format_study_plan(rows: list[dict]) -> str:
    """The rows as a text table with a note on what each column counts."""
    head = ["dataset", "method", "bs", "steps", "with the study's sequence", "with ours", "study's counter", "ratio"]
    body = [[r["dataset"], r["method"], str(r["batch_size"]), f"{r['steps']:,}", str(r["study_order"]), str(r["ours"]),
             "-" if r["study"] is None else f"{r['study']:.0f}", "-" if r["ratio"] is None else f"{r['ratio']:.3f}"]
            for r in rows]
    return text_table(head, body) + (
        "\nplanned train-step compilations = distinct padded shapes over the steps. The study's sequence: its split "
        "(RandomState(0)), its stream (Python random.shuffle, seed 42, per pass), every bs-th graph dropped. Ours: "
        "every graph once per epoch, last partial batch kept. The study's counter: its runs of that length (published, "
        "100k or 2M steps).")
