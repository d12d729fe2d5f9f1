"""``gnn-batching study``: the study's planned compile counts, a sweep beside its published runs."""

from __future__ import annotations

import argparse

from gnn_batching.cli.common import dataset_args, spec_from_args
from gnn_batching.errors import UserError
from gnn_batching.io import dumps_json


def cmd_study_plan(a: argparse.Namespace) -> int:
    """``gnn-batching study plan``: the study's compile counters beside our planned counts."""
    from gnn_batching.study.plan import format_study_plan, study_plan

    if a.steps < 1 or min(a.batch_sizes) < 2:
        raise UserError("study plan: --steps must be >= 1 and --batch-sizes >= 2")
    a.dataset = a.dataset_flag or a.dataset or "qm9"
    rows = study_plan(spec_from_args(a), a.batch_sizes, a.steps)
    print(dumps_json(rows) if a.json else format_study_plan(rows))
    return 0


def cmd_study_compare(a: argparse.Namespace) -> int:
    """``gnn-batching study compare``: a sweep beside the study's published runs."""
    from gnn_batching.study.compare import format_study_compare, write_study_compare
    from gnn_batching.sweep.results import collect

    print(format_study_compare(*write_study_compare(a.sweep_dir, collect(a.sweep_dir))))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ``study`` commands."""
    study = sub.add_parser("study", help="compare with the study itself").add_subparsers(dest="study_cmd",
                                                                                         required=True)
    sp = study.add_parser("plan", help="planned compile counts of the study's static methods vs its counters",
                          description="Planned train-step compilations (distinct padded shapes) of static-pow2 and "
                                      "static-64 over --steps, with the study's batch sequence and with ours, beside "
                                      "the study's published recompilation counters. No training.")
    dataset_args(sp, flag=True)
    sp.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128], metavar="BS",
                    help="batch sizes, each counting the padding graph (default: 16 32 64 128)")
    sp.add_argument("--steps", type=int, default=100_000, help="training steps planned (default 100000; the "
                    "study's counters exist for 100000 and 2000000)")
    sp.add_argument("--json", action="store_true", help="print a JSON list of flat objects")
    sp.set_defaults(fn=cmd_study_plan)
    sc = study.add_parser("compare", help="a sweep's numbers beside the study's published runs",
                          description="Join a sweep's results with the study's own per-run results (dataset, "
                                      "model, method, batch size, device kind): ratios between methods on both "
                                      "sides, then absolute step times, compiles and test RMSE. Writes "
                                      "study_compare.csv, study_ratios.csv and figures/study_compare.png.")
    sc.add_argument("sweep_dir", help="the sweep's output_dir, e.g. results/quickstart")
    sc.set_defaults(fn=cmd_study_compare)
