"""What every command family shares: dataset options, plug-in modules, Ctrl-C's exit status."""

from __future__ import annotations

import argparse

MODULE_HELP = ("import this Python file or module first, repeatable: it registers your own datasets, models and "
               "methods (@register_dataset, @register_model, @register_method)")


def module_arg(p: argparse.ArgumentParser) -> None:
    """``--module FILE_OR_MODULE`` (repeatable): the user's own registrations, imported first."""
    p.add_argument("--module", action="append", default=[], metavar="FILE_OR_MODULE", help=MODULE_HELP)


def dataset_args(p: argparse.ArgumentParser, flag: bool = False) -> None:
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
    module_arg(p)


def named_dataset(a: argparse.Namespace, command: str, example: str) -> None:
    """Set ``a.dataset`` from the positional name or ``--dataset``; refuse a command that names none."""
    from gnn_batching.errors import UserError

    a.dataset = a.dataset_flag or a.dataset
    if not a.dataset:
        raise UserError(f"{command}: name a dataset, e.g. {example}")


def spec_from_args(a: argparse.Namespace):
    """The :class:`~gnn_batching.data.DatasetSpec` named by :func:`dataset_args`' options."""
    from gnn_batching.data import DatasetSpec

    return DatasetSpec(name=a.dataset, source=a.source, limit=a.limit, target=a.target, graph=a.graph,
                       cutoff=a.cutoff, k=a.k, targets_csv=a.targets_csv, download=a.download,
                       skip_bad=a.skip_bad)


INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT)


def sweep_command(argv: list[str]) -> str:
    """The command line that runs the sweep again (it resumes: finished cells are skipped)."""
    import shlex

    return shlex.join(["gnn-batching", *argv])
