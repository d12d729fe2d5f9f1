"""Command line: thin parsing that calls one library function per command."""

from __future__ import annotations

import argparse
import logging
import sys

from gnn_batching.errors import UserError
from gnn_batching.io import dumps_json

MODULE_HELP = ("import this Python file or module first, repeatable: it registers your own datasets, models and "
               "methods (@register_dataset, @register_model, @register_method)")


def _module_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--module", action="append", default=[], metavar="FILE_OR_MODULE", help=MODULE_HELP)


def _dataset_args(p: argparse.ArgumentParser, flag: bool = False) -> None:
    """Dataset selection options; ``flag``: also accept ``--dataset NAME`` (the benchmark's form)."""
    help_ = "dataset name (see `gnn-batching data list`) or file:PATH"
    if flag:
        p.add_argument("dataset", nargs="?", help=help_)
        p.add_argument("--dataset", dest="dataset_flag", metavar="DATASET", help=help_)
    else:
        p.add_argument("dataset", help=help_)
    p.add_argument("--graph", choices=["fully-connected", "radius", "knn"], help="graph builder")
    p.add_argument("--cutoff", type=float, default=5.0, help="radius cutoff in Angstrom (default 5)")
    p.add_argument("--k", type=int, default=12, help="neighbours for knn (default 12)")
    p.add_argument("--target", help="target name (default: the dataset's)")
    p.add_argument("--limit", type=int, help="use a seeded random subset of N graphs")
    p.add_argument("--source", help="source file/folder (QM9 tarball or CSV, AFLOW export, ...)")
    p.add_argument("--targets-csv", help="side CSV of targets for file: datasets")
    p.add_argument("--download", action="store_true", help="aflow: download from AFLUX first (resumable)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed entries (reported) instead of failing")
    p.add_argument("--no-cache", action="store_true", help="rebuild the graph store, do not read or write the cache")
    _module_arg(p)


def _spec_from_args(a: argparse.Namespace):
    from gnn_batching.data import DatasetSpec

    return DatasetSpec(name=a.dataset, source=a.source, limit=a.limit, target=a.target, graph=a.graph,
                       cutoff=a.cutoff, k=a.k, targets_csv=a.targets_csv, download=a.download,
                       skip_bad=a.skip_bad)


def cmd_data_list(a: argparse.Namespace) -> int:
    """``gnn-batching data list``: registered datasets (or a user module's) and their recipes."""
    from gnn_batching.data.datasets import dataset_names, describe

    for name in dataset_names():
        if name == "file:PATH":
            print(f"{name:<18} any file ASE can read (extxyz, db, CIF, POSCAR; glob ok), targets from atoms.info")
        else:
            e = describe(name)
            print(f"{name:<18} {e.description}  [default graph: {e.default_graph}]")
    return 0


def cmd_data_stats(a: argparse.Namespace) -> int:
    """``gnn-batching data stats``: size distributions of a dataset's graphs."""
    from gnn_batching.data import load_dataset
    from gnn_batching.data.stats import dataset_stats, format_stats

    ds = load_dataset(_spec_from_args(a), use_cache=not a.no_cache, verbose=True)
    stats = dataset_stats(ds)
    print(dumps_json(stats, indent=None) if a.json else format_stats(stats))
    if a.plot:
        from gnn_batching.dataset_figure import plot_dataset

        print(f"histograms: {plot_dataset(ds, a.plot)}", file=sys.stderr)
    if ds.store.skipped and not a.json:
        print(f"  skipped entries ({len(ds.store.skipped)}):", file=sys.stderr)
        for s in ds.store.skipped[:20]:
            print(f"    {s}", file=sys.stderr)
    return 0


def cmd_bench_batching(a: argparse.Namespace) -> int:
    """``gnn-batching bench batching``: host assembly throughput per method against jraph and a copy."""
    from gnn_batching.bench.assembly import format_table, run_bench

    a.dataset = a.dataset_flag or a.dataset
    if not a.dataset:
        raise UserError("bench batching: name a dataset, e.g. --dataset qm9")
    if a.repeats < 1:
        raise UserError(f"bench batching: --repeats must be >= 1, got {a.repeats}")
    if any(b < 2 for b in a.batch_sizes):
        raise UserError(f"bench batching: --batch-sizes must be >= 2 (each counts the padding graph), "
                        f"got {a.batch_sizes}")
    if a.devices > 1:
        from gnn_batching.bench.assembly import format_device_table, run_device_bench

        rows = run_device_bench(_spec_from_args(a), a.batch_sizes, a.devices, a.methods, use_cache=not a.no_cache,
                                repeats=a.repeats)
        print(dumps_json(rows, indent=None) if a.json else format_device_table(rows))
        return 0
    rows = run_bench(_spec_from_args(a), a.batch_sizes, a.methods, pad_edges=a.pad_edges,
                     use_cache=not a.no_cache, repeats=a.repeats)
    print(dumps_json(rows, indent=None) if a.json else format_table(rows))
    return 0


def cmd_bench_graphs(a: argparse.Namespace) -> int:
    """``gnn-batching bench graphs``: graph building with vesin against ASE's neighbour list."""
    from gnn_batching.bench.graphs import format_graph_bench, run_graph_bench

    a.dataset = a.dataset_flag or a.dataset
    if not a.dataset:
        raise UserError("bench graphs: name a dataset, e.g. --dataset aflow-synthetic")
    if a.n < 1 or a.repeats < 1:
        raise UserError(f"bench graphs: -n and --repeats must be >= 1, got {a.n}, {a.repeats}")
    row = run_graph_bench(_spec_from_args(a), a.n, a.repeats)
    print(dumps_json(row, indent=None) if a.json else format_graph_bench(row))
    return 0 if row["equal"] else 1


def cmd_bench_step(a: argparse.Namespace) -> int:
    """``gnn-batching bench step``: jitted train-step time per allocator, model and method."""
    from gnn_batching.bench.step import format_step_table, run_bench_step, time_steps

    a.dataset = a.dataset_flag or a.dataset
    if not a.dataset:
        raise UserError("bench step: name a dataset, e.g. --dataset qm9")
    if a.steps < 1 or any(b < 2 for b in a.batch_sizes):
        raise UserError("bench step: --steps must be >= 1 and --batch-sizes >= 2")
    if a.worker:
        rows = time_steps(_spec_from_args(a), a.models, a.methods, a.batch_sizes, a.steps, forms=tuple(a.forms),
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

    a.dataset = a.dataset_flag or a.dataset
    if not a.dataset:
        raise UserError("bench pipeline: name a dataset, e.g. --dataset qm9 --limit 10000")
    if a.steps < 1 or a.block < 1 or any(b < 2 for b in a.batch_sizes):
        raise UserError("bench pipeline: --steps and --block must be >= 1 and --batch-sizes >= 2")
    if a.steps_per_call < 1:
        raise UserError("bench pipeline: --steps-per-call must be >= 1")
    rows = run_pipeline_bench(_spec_from_args(a), a.models, a.methods, a.batch_sizes, a.steps, block=a.block,
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
    row = run_roofline(_spec_from_args(a), a.model, a.method, a.batch_size, steps=a.steps,
                       profile_steps=a.profile_steps, compare=tuple(a.compare))
    print(dumps_json(row, indent=None) if a.json else format_roofline([row]))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    """``gnn-batching run``: train and evaluate one configuration into a run directory."""
    from gnn_batching.config import load_config
    from gnn_batching.train.run import run

    if a.distributed:  # before any other JAX call
        from gnn_batching.train.parallel import initialize_distributed

        initialize_distributed()
    cfg = load_config(a.config, a.set or [], modules=a.module)
    if a.resume and not a.out:
        raise UserError("run --resume: name the run directory to continue with --out")
    from gnn_batching.rundir import default_run_dir
    from gnn_batching.train.hooks import Interrupted

    out = a.out or default_run_dir(cfg.name)  # named here: an interrupted run's resume command names it
    try:
        summary = run(cfg, out_dir=out, force=a.force, resume=a.resume)
    except (KeyboardInterrupt, Interrupted):
        print(_run_interrupted(out, a.argv), file=sys.stderr)
        return INTERRUPTED
    print(dumps_json(summary))
    return 0


INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT)


def _resume_command(argv: list[str], out: str) -> str:
    """The ``gnn-batching run`` command line ``argv`` continuing in ``out`` (``--out OUT --resume``)."""
    import shlex

    kept, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == "--out":
            skip = True
        elif x not in ("--force", "--resume") and not x.startswith("--out="):
            kept.append(x)
    return shlex.join(["gnn-batching", *kept, "--out", out, "--resume"])


def _run_interrupted(out: str, argv: list[str]) -> str:
    """What an interrupted run kept (from its ``status.json``) and the command that resumes it."""
    import json
    import os

    from gnn_batching.rundir import CHECKPOINTS, STATUS

    resume = _resume_command(argv, out)
    try:
        with open(os.path.join(out, STATUS), encoding="utf-8") as fh:
            st = json.load(fh)
    except (OSError, ValueError):
        return f"interrupted before the run started: nothing was written to {out}\nresume: {resume}"
    done = st.get("steps_done", 0)
    ckpts = os.path.join(out, CHECKPOINTS)
    newest = max((int(n) for n in os.listdir(ckpts) if n.isdigit()), default=None) if os.path.isdir(ckpts) else None
    if newest is not None:
        where = f"checkpoint at step {newest}: the resumed run continues there"
    else:
        why = st.get("checkpoint_error", "train.checkpoint_every and checkpoint_minutes are off, or no step was done")
        where = f"no checkpoint ({why}): the resumed run starts again from step 0"
    return (f"interrupted after {done} step(s): kept {out} (the records of those steps: steps.csv, evals.csv, "
            f"status.json); {where}\nresume: {resume}")


def cmd_advise(a: argparse.Namespace) -> int:
    """``gnn-batching advise``: each method's predicted time to train N steps, and a recommendation."""
    from gnn_batching.advise import advise, advise_config, format_advice

    if a.steps < 1 or a.batch_size < 2 or a.compile_shapes < 1 or a.timed_steps < 1:
        raise UserError("advise: --steps, --compile-shapes and --timed-steps must be >= 1, --batch-size >= 2")
    if a.seed < 0:
        raise UserError(f"advise: --seed must be >= 0, got {a.seed}")
    cfg = advise_config(_spec_from_args(a), a.model, a.batch_size, [*(a.set or []), f"train.seed={a.seed}"])
    result = advise(cfg, a.steps, a.methods, n_compile=a.compile_shapes, timed_steps=a.timed_steps)
    if a.check:
        from gnn_batching.advise import check_advice, format_check

        result["check"] = check_advice(cfg, result, a.check)
    print(dumps_json(result) if a.json else format_advice(result) + (
        "\n\n" + format_check(result["check"]) if a.check else ""))
    return 0


def _tables_figures_report(sweep_dir: str, fmt: str = "md", show_table: bool = False) -> str:
    """The sweep's outputs, composed here: collect (tables) -> figures -> report."""
    return _sweep_outputs(sweep_dir, fmt, show_table)[0]


def _sweep_outputs(sweep_dir: str, fmt: str = "md", show_table: bool = False):
    """:func:`_tables_figures_report`, returning the report's path and the results table."""
    from gnn_batching.sweep.figures import plot_all
    from gnn_batching.sweep.report import write_report
    from gnn_batching.sweep.results import collect, format_comparison
    from gnn_batching.sweep.versus import format_versus, write_versus

    df = collect(sweep_dir, write=True)
    versus = write_versus(sweep_dir, df)
    if show_table:
        print(format_comparison(df))
        if len(versus):
            print(format_versus(versus))
    return write_report(sweep_dir, df, plot_all(sweep_dir, df=df), fmt=fmt), df


def cmd_sweep(a: argparse.Namespace) -> int:
    """``gnn-batching sweep``: run (or resume) a sweep, then write its tables, figures and report."""
    from gnn_batching.sweep.grid import check_unchanged, load_sweep
    from gnn_batching.sweep.launch import describe_cells, run_sweep

    sw = load_sweep(a.sweep, a.set or [], modules=a.module)
    if a.dry_run:
        from gnn_batching.sweep.folder import claim_output_dir

        claim_output_dir(sw.output_dir, {"name": sw.name, "grid": sw.grid}, a.force)
        check_unchanged(sw)
        print(describe_cells(sw))
        return 0
    if a.launcher == "local":
        code = run_sweep(sw, jobs=a.jobs, gpus_per_job=a.gpus_per_job, force=a.force)
    else:
        try:
            from gnn_batching.sweep.cluster import run_sweep_submitit
        except ImportError as exc:
            raise UserError(f"--launcher {a.launcher} needs submitit ({exc}); "
                            "pip install 'gnn-batching[cluster]'") from None
        code = run_sweep_submitit(sw, a.launcher, partition=a.partition, gpus_per_task=a.gpus_per_task, time=a.time,
                                  array_parallelism=a.array_parallelism, cpus_per_task=a.cpus_per_task,
                                  force=a.force)
    if code == INTERRUPTED:
        from gnn_batching.sweep.interrupt import kept_lines

        print("interrupted: " + "\n".join(kept_lines(sw)) + f"\nresume: {_sweep_command(a.argv)}",
              file=sys.stderr)
        return code
    if code == 0 and sw.report:
        report, df = _sweep_outputs(sw.output_dir, show_table=True)
        print(f"report: {report}")
        print(_verdict_block(df, report))  # the sweep's last lines: its verdict
    return code


def _sweep_command(argv: list[str]) -> str:
    """The command line that runs the sweep again (it resumes: finished cells are skipped)."""
    import shlex

    return shlex.join(["gnn-batching", *argv])


def _verdict_block(df, report: str | None = None) -> str:
    """The verdict as ``results`` prints it (``sweep`` ends with it), naming the report if given."""
    from gnn_batching.sweep.verdict import verdict

    head = f"Verdict (report: {report}):" if report else "Verdict:"
    return head + "\n" + "\n".join(f"* {line}" for line in verdict(df))


def cmd_study_plan(a: argparse.Namespace) -> int:
    """``gnn-batching study plan``: the study's compile counters beside our planned counts."""
    from gnn_batching.study_plan import format_study_plan, study_plan

    if a.steps < 1 or min(a.batch_sizes) < 2:
        raise UserError("study plan: --steps must be >= 1 and --batch-sizes >= 2")
    a.dataset = a.dataset_flag or a.dataset or "qm9"
    rows = study_plan(_spec_from_args(a), a.batch_sizes, a.steps)
    print(dumps_json(rows) if a.json else format_study_plan(rows))
    return 0


def cmd_study_compare(a: argparse.Namespace) -> int:
    """``gnn-batching study compare``: a sweep beside the study's published runs."""
    from gnn_batching.sweep.results import collect
    from gnn_batching.sweep.study_compare import format_study_compare, write_study_compare

    print(format_study_compare(*write_study_compare(a.sweep_dir, collect(a.sweep_dir))))
    return 0


def cmd_results(a: argparse.Namespace) -> int:
    """``gnn-batching results``: print a sweep's comparison table (and best new vs best study method)."""
    from gnn_batching.sweep.results import collect, format_comparison
    from gnn_batching.sweep.versus import format_versus, versus_study

    if a.against:
        return _results_against(a)
    df = collect(a.sweep_dir, write=True)
    print(_verdict_block(df) + "\n")
    print(format_comparison(df))
    versus = versus_study(df)
    if len(versus):
        print(format_versus(versus))
    return 0


def _results_against(a: argparse.Namespace) -> int:
    """``results NEW --against OLD``: the same cells of two sweeps, ratio, interval and verdict."""
    from gnn_batching.sweep.against import against, format_against, slower_beyond

    rows = against(a.sweep_dir, a.against)
    if a.json:
        print(rows.to_json(orient="records", indent=1))
    else:
        print(format_against(rows))
    if a.fail_slower is not None:
        bad = slower_beyond(rows, a.fail_slower)
        if len(bad):
            print(f"error: {len(bad)} cell(s) slower than {a.against} by more than {a.fail_slower:.0%} beyond noise",
                  file=sys.stderr)
            return 1
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    """``gnn-batching plot``: write a sweep's figures and print their paths."""
    from gnn_batching.sweep.figures import plot_all

    for path in plot_all(a.sweep_dir, fmt=a.format):
        print(path)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    """``gnn-batching report``: rewrite a sweep's tables, figures and report."""
    print(_tables_figures_report(a.sweep_dir, fmt=a.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``gnn-batching`` argument parser with all sub-commands."""
    p = argparse.ArgumentParser(
        prog="gnn-batching",
        description="Which way of batching graphs trains fastest in JAX, and does it change what the model learns? "
                    "Run instrumented trainings and sweeps over batching methods, then compare them.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="list datasets, print statistics").add_subparsers(dest="data_cmd", required=True)
    dl = data.add_parser("list", help="name every dataset")
    _module_arg(dl)
    dl.set_defaults(fn=cmd_data_list)
    st = data.add_parser("stats", help="counts and size/target distributions of a dataset")
    _dataset_args(st)
    st.add_argument("--json", action="store_true", help="print one flat JSON object")
    st.add_argument("--plot", metavar="PATH", help="also draw histograms of nodes, edges and the target to PATH "
                    "(.png or .pdf)")
    st.set_defaults(fn=cmd_data_stats)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_cmd", required=True)
    bb = bench.add_parser("batching", help="host assembly throughput of each batching method vs jraph")
    _dataset_args(bb, flag=True)
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
    _dataset_args(bg, flag=True)
    bg.add_argument("-n", type=int, default=1000, help="structures to build (default 1000)")
    bg.add_argument("--repeats", type=int, default=1, help="timings per builder (best is reported)")
    bg.add_argument("--json", action="store_true", help="print one flat JSON object")
    bg.set_defaults(fn=cmd_bench_graphs)

    bs_ = bench.add_parser("step", help="the jitted train step alone, per allocator setting (fresh process each)")
    _dataset_args(bs_, flag=True)
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
    _dataset_args(bp, flag=True)
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
    _dataset_args(br, flag=True)
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

    ad = sub.add_parser("advise", help="which batching method for a run of N steps: predicted time to train, ranked",
                        description="Predict each method's time to train N steps (compilation included) from a "
                                    "few minutes of measurement: the padded shapes the run will meet (planned "
                                    "exactly), compile seconds of a few of them, the steady step against padded "
                                    "size. Prints a ranked table, the padding-free ideal and one recommendation.")
    _dataset_args(ad)
    ad.add_argument("--model", default="schnet", help="model (default schnet; any registered model)")
    ad.add_argument("--steps", type=int, default=100_000, help="the run length N (default 100000)")
    ad.add_argument("--batch-size", type=int, default=32, help="graphs per batch incl. the padding graph (default 32)")
    ad.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                    help="methods to compare (default: static-pow2 static-64 dynamic buckets packed)")
    ad.add_argument("--seed", type=int, default=0, help="train.seed of the run (its epoch order; default 0)")
    ad.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="dotted override of the run (model.*, batching.*, train.*), repeatable")
    ad.add_argument("--compile-shapes", type=int, default=3, help="shapes compiled and timed per method (default 3)")
    ad.add_argument("--timed-steps", type=int, default=15, help="timed steps per compiled shape (default 15)")
    ad.add_argument("--check", metavar="DIR", help="then run every method for real (`gnn-batching run`, one after "
                    "the other, run folders under DIR) and print the measured time to train beside the prediction")
    ad.add_argument("--json", action="store_true", help="print one JSON object: recommendation, methods, ideal "
                    "(and check)")
    ad.set_defaults(fn=cmd_advise)

    study = sub.add_parser("study", help="compare with the study itself").add_subparsers(dest="study_cmd",
                                                                                         required=True)
    sp = study.add_parser("plan", help="planned compile counts of the study's static methods vs its counters",
                          description="Planned train-step compilations (distinct padded shapes) of static-pow2 and "
                                      "static-64 over --steps, with the study's batch sequence and with ours, beside "
                                      "the study's published recompilation counters. No training.")
    _dataset_args(sp, flag=True)
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

    r = sub.add_parser("run", help="one training run from a YAML config")
    r.add_argument("config", help="YAML config, e.g. configs/smoke.yaml")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, repeatable")
    _module_arg(r)
    r.add_argument("--out", help="run directory (default: results/runs/<name>-<time>)")
    r.add_argument("--force", action="store_true",
                   help="redo a PARTIAL run in --out in place (a finished run or foreign files are never replaced)")
    r.add_argument("--resume", action="store_true",
                   help="continue the partial run in --out from its latest checkpoint (from step 0 if it has none); "
                        "settings other than the run started with are refused")
    r.add_argument("--distributed", action="store_true",
                   help="join a multi-host run (jax.distributed.initialize: Slurm and Open MPI detected; else set "
                        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    r.set_defaults(fn=cmd_run)

    sw = sub.add_parser("sweep", help="run a grid of runs; resumes where it stopped")
    sw.add_argument("sweep", help="sweep YAML, e.g. configs/quickstart.yaml")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help="override (base keys or output_dir)")
    _module_arg(sw)
    sw.add_argument("--jobs", type=int, default=1, help="parallel local processes (--launcher local)")
    sw.add_argument("--gpus-per-job", type=int, default=0,
                    help="--launcher local: each of the --jobs gets its own GPUs (CUDA_VISIBLE_DEVICES)")
    sw.add_argument("--dry-run", action="store_true", help="list the cells and their state, run nothing")
    sw.add_argument("--force", action="store_true",
                    help="write into an output_dir that holds files that are not this sweep's (they are kept; a "
                         "file of a name the sweep writes, or another sweep's folder, is still refused)")
    sw.add_argument("--launcher", choices=["local", "slurm", "submitit-local"], default="local",
                    help="local processes, a Slurm job array through submitit, or submitit's local executor")
    sw.add_argument("--partition", help="Slurm partition (--launcher slurm)")
    sw.add_argument("--gpus-per-task", type=int, default=0, help="GPUs per cell job (use train.devices: all)")
    sw.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per cell job")
    sw.add_argument("--time", default="60", help="time limit per cell job: minutes or H:MM:SS (default 60)")
    sw.add_argument("--array-parallelism", type=int, default=64, help="cell jobs running at once (default 64)")
    sw.set_defaults(fn=cmd_sweep)

    res = sub.add_parser("results", help="collect a sweep into one tidy table; print its verdict and comparison",
                         description="Collect a sweep's finished runs into results.csv/.parquet and comparison.csv "
                                     "(in the sweep folder), and print the verdict and the comparison table.")
    res.add_argument("sweep_dir", help="the sweep's output_dir, e.g. results/quickstart")
    res.add_argument("--against", metavar="OLD_SWEEP_DIR",
                     help="compare with another sweep's same cells (two commits, jax versions or machines): NEW / "
                          "OLD graphs/s with a 95%% interval and a verdict faster / slower / same per cell; reads "
                          "both, writes nothing")
    res.add_argument("--json", action="store_true", help="with --against: a JSON list of rows (ratio, low, high, "
                                                        "verdict, ...)")
    res.add_argument("--fail-slower", type=float, metavar="FRACTION",
                     help="with --against: exit 1 when a cell is slower beyond noise by more than FRACTION (its "
                          "interval's upper end below 1 - FRACTION), e.g. 0.05 in a CI job")
    res.set_defaults(fn=cmd_results)

    pl = sub.add_parser("plot", help="write the study's figures for a sweep",
                        description="Draw a sweep's figures into <sweep_dir>/figures/ and print their paths.")
    pl.add_argument("sweep_dir", help="the sweep's output_dir, e.g. results/quickstart")
    pl.add_argument("--format", choices=["png", "pdf"], default="png", help="image format (default png)")
    pl.set_defaults(fn=cmd_plot)

    rep = sub.add_parser("report", help="rewrite a sweep's tables and figures and its report (Markdown or HTML)",
                         description="Rewrite everything a sweep shows: results.csv/.parquet, comparison.csv, "
                                     "versus_study.csv, significance.csv, figures/, and report.md (or report.html "
                                     "with --format html) with the verdict, tables, figures and provenance.")
    rep.add_argument("sweep_dir", help="the sweep's output_dir, e.g. results/quickstart")
    rep.add_argument("--format", choices=["md", "html"], default="md", help="report.md (default) or report.html")
    rep.set_defaults(fn=cmd_report)
    return p


EXAMPLES = """examples:
  gnn-batching data stats qm9
  gnn-batching run configs/smoke.yaml
  gnn-batching run configs/qm9.yaml --set batching.method=static-64 --set dataset.limit=2000 --out results/runs/r
  gnn-batching run configs/qm9.yaml --out results/runs/r --resume
  gnn-batching sweep configs/quickstart.yaml
  gnn-batching results results/quickstart
  gnn-batching results results/new --against results/old --fail-slower 0.05
  gnn-batching report results/quickstart --format html
  gnn-batching bench batching --dataset qm9 --batch-sizes 16 64
  gnn-batching advise qm9 --limit 2000 --model schnet --steps 100000 --batch-size 32

every config key: docs/config.md; `gnn-batching COMMAND --help` for a command's options"""


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("gnn-batching")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


FAST_ALLOCATOR_COMMANDS = ("run", "sweep", "bench", "advise")  # commands that train or time training steps


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (pytest swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _Formatter(logging.Formatter):
    """The package's lines as they are; other libraries' lines with their level and logger."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name.startswith("gnn_batching"):
            return record.getMessage()
        return f"{record.levelname.lower()} ({record.name}): {record.getMessage()}"


def _log_to_stderr() -> None:
    """Show the package's INFO lines (progress, notes), and other libraries' warnings, on stderr.

    The handler sits on the root logger, once per process: a library that configures logging
    when it finds the root bare (absl, which orbax imports, calls ``logging.basicConfig()``)
    then leaves it alone, and every line is printed once.
    """
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        root.addHandler(handler)
    logging.getLogger("gnn_batching").setLevel(logging.INFO)


def _load_plugins(a: argparse.Namespace) -> None:
    """Import ``--module`` files first, then check ``--models`` / ``--methods`` against the registries."""
    from gnn_batching.plugins import load_modules, method_class, model_entry

    load_modules(getattr(a, "module", None) or [], key="--module")
    for name in getattr(a, "models", None) or []:
        model_entry(name, key="--models")
    for name in getattr(a, "methods", None) or []:
        method_class(name, key="--methods")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gnn-batching``.

    Args:
      argv: arguments (default ``sys.argv[1:]``; only then may the process re-execute itself
        with the fast allocator).

    Returns:
      The exit status: 0 on success, 2 for a user error (printed without a traceback).
    """
    if argv is None:
        from gnn_batching.command import apply_launch_env

        apply_launch_env()  # a sweep cell: pin to its cores, die with the sweep
    _log_to_stderr()
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from gnn_batching import xla_flags

        xla_flags.apply()  # before JAX starts: the GPU scatter-add remedy where jaxlib needs it
        if argv is None and args.command in FAST_ALLOCATOR_COMMANDS:
            from gnn_batching import allocator

            allocator.ensure(sys.argv[1:])  # re-executes once with a caching allocator preloaded
        _load_plugins(args)
        return int(args.fn(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        if args.command == "sweep":  # stopped outside its cells (loading, reporting): nothing is half-written
            print(f"resume: {_sweep_command(args.argv)}", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # e.g. `gnn-batching sweep X --dry-run | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
