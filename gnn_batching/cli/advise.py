"""``gnn-batching advise``: which method for a run of N steps."""

from __future__ import annotations

import argparse

from gnn_batching.cli.common import dataset_args, spec_from_args
from gnn_batching.errors import UserError
from gnn_batching.io import dumps_json


def cmd_advise(a: argparse.Namespace) -> int:
    """``gnn-batching advise``: each method's predicted time to train N steps, and a recommendation."""
    from gnn_batching.advise import advise, advise_config, format_advice

    if a.steps < 1 or a.batch_size < 2 or a.compile_shapes < 1 or a.timed_steps < 1:
        raise UserError("advise: --steps, --compile-shapes and --timed-steps must be >= 1, --batch-size >= 2")
    if a.seed < 0:
        raise UserError(f"advise: --seed must be >= 0, got {a.seed}")
    cfg = advise_config(spec_from_args(a), a.model, a.batch_size, [*(a.set or []), f"train.seed={a.seed}"])
    result = advise(cfg, a.steps, a.methods, n_compile=a.compile_shapes, timed_steps=a.timed_steps)
    if a.check:
        from gnn_batching.advise import check_advice, format_check

        result["check"] = check_advice(cfg, result, a.check)
    print(dumps_json(result) if a.json else format_advice(result) + (
        "\n\n" + format_check(result["check"]) if a.check else ""))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``advise``."""
    ad = sub.add_parser("advise", help="which batching method for a run of N steps: predicted time to train, ranked",
                        description="Predict each method's time to train N steps (compilation included) from a "
                                    "few minutes of measurement: the padded shapes the run will meet (planned "
                                    "exactly), compile seconds of a few of them, the steady step against padded "
                                    "size. Prints a ranked table, the padding-free ideal and one recommendation.")
    dataset_args(ad)
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
