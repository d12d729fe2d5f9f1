"""``gnn-batching data``: list datasets, print a dataset's statistics."""

from __future__ import annotations

import argparse
import sys

from gnn_batching.cli.common import dataset_args, module_arg, spec_from_args
from gnn_batching.io import dumps_json


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

    ds = load_dataset(spec_from_args(a), use_cache=not a.no_cache, verbose=True)
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``data list`` and ``data stats``."""
    data = sub.add_parser("data", help="list datasets, print statistics").add_subparsers(dest="data_cmd", required=True)
    dl = data.add_parser("list", help="name every dataset")
    module_arg(dl)
    dl.set_defaults(fn=cmd_data_list)
    st = data.add_parser("stats", help="counts and size/target distributions of a dataset")
    dataset_args(st)
    st.add_argument("--json", action="store_true", help="print one flat JSON object")
    st.add_argument("--plot", metavar="PATH", help="also draw histograms of nodes, edges and the target to PATH "
                    "(.png or .pdf)")
    st.set_defaults(fn=cmd_data_stats)
