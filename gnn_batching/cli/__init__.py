"""Command line: thin parsing that calls one library function per command.

One module per command family (``data``, ``bench``, ``run``, ``advise``, ``study``, ``sweep``), each
registering its sub-commands with ``add_commands``; this module builds the parser, sets up logging
and runs the chosen command (:func:`main`, the ``gnn-batching`` entry point)."""

from __future__ import annotations

import argparse
import logging
import sys

from gnn_batching.cli import advise, bench, data, run, study, sweep
from gnn_batching.cli.common import INTERRUPTED, sweep_command
from gnn_batching.errors import UserError

FAMILIES = (data, bench, advise, study, run, sweep)  # in --help's order


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
    for family in FAMILIES:
        family.add_commands(sub)
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
            print(f"resume: {sweep_command(args.argv)}", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # e.g. `gnn-batching sweep X --dry-run | head`
        sys.stderr.close()
        return 0


