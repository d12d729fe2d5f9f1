"""``gnn-batching bench``: the benchmarks (assembly, graphs, step, pipeline, roofline)."""

from __future__ import annotations

import argparse

from gnn_batching.cli.common import dataset_args, named_dataset, spec_from_args
from gnn_batching.errors import UserError
from gnn_batching.io import dumps_json


def cmd_bench_batching(a: argparse.Namespace) -> int:
    """``gnn-batching bench batching``: host assembly throughput per method against jraph and a copy."""
    from gnn_batching.bench.assembly import format_table, run_bench

    named_dataset(a, "bench batching", "--dataset qm9")
    if a.repeats < 1:
        raise UserError(f"bench batching: --repeats must be >= 1, got {a.repeats}")
    if any(b < 2 for b in a.batch_sizes):
        raise UserError(f"bench batching: --batch-sizes must be >= 2 (each counts the padding graph), "
                        f"got {a.batch_sizes}")
    if a.devices > 1:
        from gnn_batching.bench.assembly import format_device_table, run_device_bench

        rows = run_device_bench(spec_from_args(a), a.batch_sizes, a.devices, a.methods, use_cache=not a.no_cache,
                                repeats=a.repeats)
        print(dumps_json(rows, indent=None) if a.json else format_device_table(rows))
        return 0
    rows = run_bench(spec_from_args(a), a.batch_sizes, a.methods, pad_edges=a.pad_edges,
                     use_cache=not a.no_cache, repeats=a.repeats)
    print(dumps_json(rows, indent=None) if a.json else format_table(rows))
    return 0


def cmd_bench_graphs(a: argparse.Namespace) -> int:
    """``gnn-batching bench graphs``: graph building with vesin against ASE's neighbour list."""
    from gnn_batching.bench.graphs import format_graph_bench, run_graph_bench

    named_dataset(a, "bench graphs", "--dataset aflow-synthetic")
    if a.n < 1 or a.repeats < 1:
        raise UserError(f"bench graphs: -n and --repeats must be >= 1, got {a.n}, {a.repeats}")
    row = run_graph_bench(spec_from_args(a), a.n, a.repeats)
    print(dumps_json(row, indent=None) if a.json else format_graph_bench(row))
    return 0 if row["equal"] else 1


def cmd_bench_step(a: argparse.Namespace) -> int:
    """``gnn-batching bench step``: jitted train-step time per allocator, model and method."""
    from gnn_batching.bench.step import format_step_table, run_bench_step, time_steps

    named_dataset(a, "bench step", "--dataset qm9")
    if a.steps < 1 or any(b < 2 for b in a.batch_sizes):
        raise UserError("bench step: --steps must be >= 1 and --batch-sizes >= 2")
    if a.worker:
        rows = time_steps(spec_from_args(a), a.models, a.methods, a.batch_sizes, a.steps, forms=tuple(a.forms),
                          autobatch_mode=a.autobatch_mode)
        print(dumps_json(rows, indent=None))
        return 0
    from gnn_batching.allocator import CHOICES

    bad = [s for s in a.allocators if s not in CHOICES]
    if bad:
        raise UserError(f"bench step: --allocators {bad}: choose from {', '.join(CHOICES)}")
    worker_argv = [x for x in a.argv if x != "--json"]
    rows = run_bench_step(worker_argv, a.allocators)
    print(dumps_json(rows, indent=None) if a.json else format_step_table(rows))
    return 0


def cmd_bench_pipeline(a: argparse.Namespace) -> int:
    """``gnn-batching bench pipeline``: a whole step, host path vs device-resident path, same batches."""
    from gnn_batching.bench.pipeline import format_pipeline, run_pipeline_bench

    named_dataset(a, "bench pipeline", "--dataset qm9 --limit 10000")
    if a.steps < 1 or a.block < 1 or any(b < 2 for b in a.batch_sizes):
        raise UserError("bench pipeline: --steps and --block must be >= 1 and --batch-sizes >= 2")
    if a.steps_per_call < 1:
        raise UserError("bench pipeline: --steps-per-call must be >= 1")
    rows = run_pipeline_bench(spec_from_args(a), a.models, a.methods, a.batch_sizes, a.steps, block=a.block,
                              k=a.steps_per_call)
    print(dumps_json(rows, indent=None) if a.json else format_pipeline(rows))
    return 0


def cmd_bench_roofline(a: argparse.Namespace) -> int:
    """``gnn-batching bench roofline``: a step's work, the machine's peaks, efficiency, time per op class."""
    from gnn_batching.bench.roofline import format_roofline, run_roofline
    from gnn_batching.plugins import method_class, model_entry

    a.dataset = a.dataset_flag or a.dataset or "qm9"
    if a.steps < 1 or a.profile_steps < 0 or a.batch_size < 2:
        raise UserError("bench roofline: --steps must be >= 1, --profile-steps >= 0 and --batch-size >= 2")
    model_entry(a.model, key="--model")
    method_class(a.method, key="--method")
    row = run_roofline(spec_from_args(a), a.model, a.method, a.batch_size, steps=a.steps,
                       profile_steps=a.profile_steps, compare=tuple(a.compare))
    print(dumps_json(row, indent=None) if a.json else format_roofline([row]))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ``bench`` commands."""
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_cmd", required=True)
    bb = bench.add_parser("batching", help="host assembly throughput of each batching method vs jraph")
    dataset_args(bb, flag=True)
    bb.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128], metavar="BS",
                    help="batch sizes, each counting the padding graph (default: 16 32 64 128)")
    bb.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                    help="methods to time (default: every registered one)")
    bb.add_argument("--pad-edges", choices=["hub", "spread"], default="hub",
                    help="where padding edges point: one padding node (hub, jraph's) or spread over them")
    bb.add_argument("--repeats", type=int, default=1, help="epochs timed per row (best is reported)")
    bb.add_argument("--devices", type=int, default=1,
                    help="N > 1: time data-parallel steps of N device batches, sequential vs parallel threads")
    bb.add_argument("--json", action="store_true", help="print a JSON list of flat objects")
    bb.set_defaults(fn=cmd_bench_batching)

    bg = bench.add_parser("graphs", help="graph building: vesin vs ASE neighbour lists (structures/s, ratio)")
    dataset_args(bg, flag=True)
    bg.add_argument("-n", type=int, default=1000, help="structures to build (default 1000)")
    bg.add_argument("--repeats", type=int, default=1, help="timings per builder (best is reported)")
    bg.add_argument("--json", action="store_true", help="print one flat JSON object")
    bg.set_defaults(fn=cmd_bench_graphs)

    bs_ = bench.add_parser("step", help="the jitted train step alone, per allocator setting (fresh process each)")
    dataset_args(bs_, flag=True)
    bs_.add_argument("--models", nargs="+", default=["schnet", "mpeu"], metavar="MODEL",
                     help="models to time (default: schnet mpeu; any registered model)")
    bs_.add_argument("--methods", nargs="+", default=["dynamic"], metavar="METHOD",
                     help="batching methods (default: dynamic; any registered method)")
    bs_.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64], metavar="BS",
                     help="batch sizes, each counting the padding graph (default: 32 64)")
    bs_.add_argument("--forms", nargs="+", choices=["sparse", "dense"], default=["sparse"],
                     help="model forms; dense (an n x n neighbourhood per graph) runs with --methods autobatch only")
    bs_.add_argument("--autobatch-mode", choices=["auto", "ragged", "vmap"], default="auto",
                     help="autobatch's mode, as batching.autobatch_mode (default auto: ragged when the model "
                          "transforms, else vmap; the rows say which ran)")
    bs_.add_argument("--steps", type=int, default=30, help="timed steps per row (after an untimed warm-up)")
    bs_.add_argument("--allocators", nargs="+", default=["system", "auto"],
                     help="settings of GNN_BATCHING_ALLOCATOR to compare (auto = the default)")
    bs_.add_argument("--json", action="store_true", help="print a JSON list of flat objects")
    bs_.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    bs_.set_defaults(fn=cmd_bench_step)

    bp = bench.add_parser("pipeline", help="a whole training step: host assembly + copy vs the device-resident "
                                           "store's gather, and the step alone, on the same batches")
    dataset_args(bp, flag=True)
    bp.add_argument("--models", nargs="+", default=["schnet"], metavar="MODEL",
                    help="models (default: schnet; any registered model)")
    bp.add_argument("--methods", nargs="+", default=["dynamic", "static-64"], metavar="METHOD",
                    help="batching methods with one GraphsTuple per step (default: dynamic static-64)")
    bp.add_argument("--batch-sizes", type=int, nargs="+", default=[128], metavar="BS",
                    help="batch sizes, each counting the padding graph (default: 128)")
    bp.add_argument("--steps", type=int, default=60, help="timed steps per path and row (default 60)")
    bp.add_argument("--block", type=int, default=10, help="steps per path before switching paths (default 10)")
    bp.add_argument("--steps-per-call", type=int, default=8, help="K: steps per dispatch timed on the device path "
                    "(default 8)")
    bp.add_argument("--json", action="store_true", help="print a JSON list of flat objects")
    bp.set_defaults(fn=cmd_bench_pipeline)

    br = bench.add_parser("roofline", help="one step against the machine's measured peaks: FLOPs and bytes (XLA's "
                                           "cost analysis), roofline time, efficiency, time per op class")
    dataset_args(br, flag=True)
    br.add_argument("--model", default="schnet", help="model (default: schnet; any registered model)")
    br.add_argument("--method", default="dynamic", help="batching method (default: dynamic)")
    br.add_argument("--batch-size", type=int, default=64, help="batch size, counting the padding graph (default 64)")
    br.add_argument("--steps", type=int, default=30, help="timed steps for the measured time (default 30)")
    br.add_argument("--profile-steps", type=int, default=8, help="steps profiled for the time per op class "
                    "(default 8; 0: no profile)")
    br.add_argument("--compare", nargs="+", default=[], choices=["reference", "study"],
                    help="also time other formulations of the model on the same batches, taking turns with ours: "
                         "reference (its plain transcription before the faster code), study (the study's own "
                         "jraph.GraphNetwork formulation and pmap-ed update)")
    br.add_argument("--json", action="store_true", help="print one flat JSON object")
    br.set_defaults(fn=cmd_bench_roofline)
