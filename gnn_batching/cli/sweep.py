"""``gnn-batching sweep``, ``results``, ``plot``, ``report``: a grid of runs and what it shows."""

from __future__ import annotations

import argparse
import sys

from gnn_batching.cli.common import INTERRUPTED, module_arg, sweep_command
from gnn_batching.errors import UserError


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

        print("interrupted: " + "\n".join(kept_lines(sw)) + f"\nresume: {sweep_command(a.argv)}",
              file=sys.stderr)
        return code
    if code == 0 and sw.report:
        report, df = _sweep_outputs(sw.output_dir, show_table=True)
        print(f"report: {report}")
        print(_verdict_block(df, report))  # the sweep's last lines: its verdict
    return code


def _verdict_block(df, report: str | None = None) -> str:
    """The verdict as ``results`` prints it (``sweep`` ends with it), naming the report if given."""
    from gnn_batching.sweep.verdict import verdict

    head = f"Verdict (report: {report}):" if report else "Verdict:"
    return head + "\n" + "\n".join(f"* {line}" for line in verdict(df))


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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sweep``, ``results``, ``plot`` and ``report``."""
    sw = sub.add_parser("sweep", help="run a grid of runs; resumes where it stopped")
    sw.add_argument("sweep", help="sweep YAML, e.g. configs/quickstart.yaml")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a base key, output_dir, repeats or name; a grid axis given so is pinned to "
                    "that value (said on stderr); grid.KEY=[a,b] replaces an axis")
    module_arg(sw)
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
