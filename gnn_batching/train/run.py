"""One instrumented training run: config -> run directory with every measurement.

Run directory contents (all written atomically; ``summary.json`` is written LAST, so its
presence means the run finished):

* ``config.yaml``      the resolved config
* ``provenance.json``  git commit, package versions, JAX backend/device, CPU, cores
* ``data.json``        facts derived from the data: split sizes, target stats, budget, method
* ``steps.csv``        one row per step: timings, compile flags, real and padded sizes, loss
* ``evals.csv``        one row per (step, split): RMSE, MAE (physical units), graphs evaluated
* ``epochs.csv``       per-epoch batcher statistics (batches, graphs, shapes, fill)
* ``status.json``      ``complete``, or ``interrupted`` / ``failed`` with the reason and steps done
                       (the records above are kept for a run that stopped early)
* ``summary.json``     the flat summary row
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import signal
import threading
import time

import jax
import numpy as np
import yaml

from gnn_batching.batching.assemble import Batch
from gnn_batching.batching.loader import make_loaders
from gnn_batching.data import load_dataset
from gnn_batching.errors import ConfigError, UserError
from gnn_batching.io import write_csv_atomic, write_json_atomic, write_text_atomic
from gnn_batching.models import make_model
from gnn_batching.progress import Progress
from gnn_batching.train.config import RunConfig
from gnn_batching.train.instruments import (
    CompileMonitor,
    StepLog,
    compilation_cache,
    peak_device_memory,
    summarise_steps,
    timer,
)
from gnn_batching.train.provenance import provenance
from gnn_batching.train.steps import count_params, init_state, make_optimizer, make_steps

RUN_FILES = ("config.yaml", "provenance.json", "data.json", "steps.csv", "evals.csv", "epochs.csv", "status.json",
             "summary.json")


def safe_name(name: str) -> str:
    """A run name usable as ONE path component: ``../../x`` stays inside ``results/runs``."""
    slug = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)
    while ".." in slug:
        slug = slug.replace("..", "_")
    slug = slug.strip(".")
    return slug or "run"


def default_run_dir(cfg: RunConfig) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("results", "runs", f"{safe_name(cfg.name)}-{stamp}")


def check_out_dir(out: str, force: bool = False) -> None:
    """Refuse a run directory that holds a finished run, or anything this run did not create.

    ``force`` allows redoing a PARTIAL run in place (what a resumed sweep does): the folder may
    then hold only the files a run writes.
    """
    if os.path.exists(os.path.join(out, "summary.json")):
        raise UserError(f"{out}: already holds a finished run (summary.json); choose another --out")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    present = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if not present:
        return
    foreign = [f for f in present if f not in RUN_FILES]
    if not force or foreign:
        what = f"files this run does not write ({', '.join(foreign[:5])})" if foreign else "a partial run"
        hint = "" if foreign else ", or pass --force to redo the partial run in place"
        raise UserError(f"{out}: exists and holds {what}; choose another --out{hint}")


def to_device(batch: Batch) -> Batch:
    """Copy a batch's arrays to the default device (run in the prefetch thread, so the update
    times the device step alone); the copy's time is kept in ``transfer_ms``."""
    t0 = timer()
    graph, targets, mask = jax.device_put((batch.graph, batch.targets, batch.graph_mask))
    jax.block_until_ready((graph, targets, mask))
    return dataclasses.replace(batch, graph=graph, targets=targets, graph_mask=mask,
                               transfer_ms=(timer() - t0) * 1e3)


def evaluate(eval_step, params, loader, monitor: CompileMonitor) -> dict:
    """One ordered pass over a split: every graph exactly once, final partial batch included."""
    sse = sae = 0.0
    n = 0.0
    graphs = 0
    for batch in loader.epoch(0):
        with monitor.track("eval", eval_step):
            out = eval_step(params, batch.graph, batch.targets, batch.graph_mask)
            out = jax.device_get(out)
        sse += float(out["sse"])
        sae += float(out["sae"])
        n += float(out["n"])
        graphs += batch.n_real_graphs
    if graphs != len(loader.index) or round(n) != graphs:  # an invariant: evaluation never skips
        raise RuntimeError(f"evaluation covered {graphs} graphs of {len(loader.index)}")
    if graphs == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "graphs": 0}
    return {"rmse": math.sqrt(sse / n), "mae": sae / n, "graphs": graphs}


class _Interrupted(Exception):
    """Raised in the main thread on SIGTERM, so the run keeps its records on the way out."""


@contextlib.contextmanager
def _sigterm_as_exception():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Interrupted(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(cfg: RunConfig, out_dir: str | None = None, verbose: bool = True, force: bool = False) -> dict:
    """Train and evaluate one configuration; returns the summary (also in ``summary.json``).

    Everything that can fail on bad input (dataset, splits, budgets, model) is checked BEFORE
    the run directory is created or written. An interrupted or failed run keeps its per-step
    records and says so in ``status.json`` (no ``summary.json``: it is not a finished run).
    """
    out = out_dir or default_run_dir(cfg)
    check_out_dir(out, force)
    t_start = time.perf_counter()
    ds = load_dataset(cfg.dataset, verbose=verbose)
    tc, bc = cfg.train, cfg.batching
    for split in tc.eval_splits:  # an empty split would report a meaningless error
        if len(ds.splits.get(split)) == 0:
            raise ConfigError(f"dataset.split: the {split} split of {len(ds.store)} graphs is empty, but "
                              f"train.eval_splits evaluates it; use more graphs or a larger share")
    method, train_loader, eval_loaders = make_loaders(bc, ds.store, ds.targets(), ds.splits, seed=tc.seed)
    model = make_model(cfg.model, ds.store.n_species)

    os.makedirs(out, exist_ok=True)
    write_text_atomic(os.path.join(out, "config.yaml"), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    prov = provenance()
    write_json_atomic(os.path.join(out, "provenance.json"), prov)
    eval_method = eval_loaders["test"].method
    write_json_atomic(os.path.join(out, "data.json"), {
        "dataset": cfg.dataset.name, "synthetic": ds.synthetic, "target": ds.target, "unit": ds.unit,
        "n_graphs": len(ds.store), "n_train": len(ds.splits.train), "n_val": len(ds.splits.val),
        "n_test": len(ds.splits.test), "train_mean": ds.stats.mean, "train_std": ds.stats.std,
        "n_species": ds.store.n_species, "species_z": ds.store.species_z.tolist(),
        "skipped_entries": len(ds.store.skipped), "batching": method.describe(),
        "eval_batching": eval_method.describe(),
    })

    tx = make_optimizer(tc.lr, tc.decay_steps, tc.decay_rate, tc.staircase)
    train_step, eval_step = make_steps(model, tx, ds.stats)
    monitor = CompileMonitor()
    stream = train_loader.stream(bc.prefetch, transform=to_device)
    log = StepLog()
    evals: list[dict] = []
    prog = Progress(f"run {cfg.name}", total=tc.steps, enabled=verbose)
    state = None
    n_params = 0
    init_s = 0.0
    graphs_seen = 0
    train_wall_s = 0.0
    status = {"status": "running"}

    def keep_records() -> None:
        import pandas as pd

        write_csv_atomic(os.path.join(out, "steps.csv"), log.frame())
        write_csv_atomic(os.path.join(out, "evals.csv"), pd.DataFrame(evals))
        write_csv_atomic(os.path.join(out, "epochs.csv"), pd.DataFrame(train_loader.epoch_stats))

    try:
        with _sigterm_as_exception(), compilation_cache(tc.compilation_cache):
            for step in range(tc.steps):
                t0 = timer()
                batch = next(stream)
                t1 = timer()
                if state is None:  # init outside the timed step (uses the first batch's shapes)
                    state = init_state(model, tx, batch.graph, tc.seed)
                    n_params = count_params(state.params)
                    t1b = timer()
                    init_s = t1b - t1
                else:
                    t1b = t1
                with monitor.track("train", train_step) as info:
                    state, metrics = train_step(state, batch.graph, batch.targets, batch.graph_mask)
                    jax.block_until_ready((state, metrics))
                t2 = timer()
                loss = float(metrics["loss"])
                graphs_seen += batch.n_real_graphs
                train_wall_s += (t1 - t0) + (t2 - t1b)
                n_node, n_edge, n_graph = batch.shape
                log.add(step=step, assembly_ms=(t1 - t0) * 1e3, update_ms=(t2 - t1b) * 1e3,
                        combined_ms=(t1 - t0 + t2 - t1b) * 1e3, compiled=info["compiled"],
                        compile_s=info["compile_s"],
                        wait_ms=getattr(stream, "last_wait_s", float("nan")) * 1e3,
                        transfer_ms=batch.transfer_ms,
                        real_graphs=batch.n_real_graphs, real_nodes=batch.n_real_nodes,
                        real_edges=batch.n_real_edges, n_node=n_node, n_edge=n_edge, n_graph=n_graph, loss=loss,
                        graphs_seen=graphs_seen)
                if not np.isfinite(loss):
                    raise UserError(f"{cfg.name}: loss became {loss} at step {step}; lower train.lr? "
                                    f"(records so far kept in {out})")
                last = step == tc.steps - 1
                if last or (tc.eval_every and (step + 1) % tc.eval_every == 0):
                    for split in tc.eval_splits:
                        r = evaluate(eval_step, state.params, eval_loaders[split], monitor)
                        evals.append({"step": step + 1, "split": split, "graphs_seen": graphs_seen,
                                      "train_wall_s": train_wall_s, **r})
                prog.update(step + 1, postfix=f"loss {loss:.4f}")
        status = {"status": "complete"}
    except BaseException as exc:
        kind = "interrupted" if isinstance(exc, (KeyboardInterrupt, _Interrupted)) else "failed"
        status = {"status": kind, "reason": f"{type(exc).__name__}: {exc}", "steps_done": len(log)}
        raise
    finally:
        prog.close()
        if hasattr(stream, "close"):
            stream.close()
        monitor.close()
        keep_records()
        if status["status"] != "complete":
            write_json_atomic(os.path.join(out, "status.json"), status)

    import pandas as pd

    steps_df = log.frame()
    evals_df = pd.DataFrame(evals)
    epochs_df = pd.DataFrame(train_loader.epoch_stats)
    summary = build_summary(cfg, ds, steps_df, evals_df, epochs_df, monitor, n_params, prov)
    summary["init_s"] = init_s
    summary["peak_device_memory_bytes"] = peak_device_memory()
    summary["wall_s"] = time.perf_counter() - t_start
    summary["concurrent_jobs"] = int(os.environ.get("GNN_BATCHING_JOBS", "1"))
    summary["run_dir"] = os.path.abspath(out)
    write_json_atomic(os.path.join(out, "status.json"), status)
    write_json_atomic(os.path.join(out, "summary.json"), summary)
    return summary


def build_summary(cfg, ds, steps_df, evals_df, epochs_df, monitor, n_params, prov: dict) -> dict:
    tc = cfg.train
    timing = summarise_steps(steps_df, tc.warmup_steps)
    timed = steps_df[steps_df["step"] >= tc.warmup_steps]
    real = steps_df[["real_graphs", "real_nodes", "real_edges", "n_node", "n_edge", "n_graph"]].sum()

    def final(split: str, metric: str) -> float:
        rows = evals_df[evals_df["split"] == split] if len(evals_df) else evals_df
        return float(rows.iloc[-1][metric]) if len(rows) else float("nan")

    s = {
        "dataset": cfg.dataset.name, "model": cfg.model.name, "method": cfg.batching.method,
        "batch_size": cfg.batching.batch_size, "seed": tc.seed, "steps": tc.steps, "n_params": n_params,
        "target": ds.target, "unit": ds.unit, "synthetic": ds.synthetic,
        "n_train": len(ds.splits.train), "limit": cfg.dataset.limit,
        "budget": cfg.batching.budget if cfg.batching.method == "dynamic" else None,
        "pad_edges": cfg.batching.pad_edges, "prefetch": cfg.batching.prefetch,
        "real_graphs_per_batch_mean": float(steps_df["real_graphs"].mean()),
        **timing,
        "train_step_compiles": monitor.counts.get("train", 0),
        "eval_step_compiles": monitor.counts.get("eval", 0),
        "train_compile_seconds": monitor.seconds.get("train", 0.0),
        "eval_compile_seconds": monitor.seconds.get("eval", 0.0),
        "compile_seconds": sum(monitor.seconds.values()),
        "compilation_cache": tc.compilation_cache,
        "compile_cache_hits": sum(monitor.cache_hits.values()),
        "compiles_in_timed_window": int(timed["compiled"].sum()),
        "distinct_train_shapes": int(steps_df[["n_node", "n_edge", "n_graph"]].drop_duplicates().shape[0]),
        "node_fill": float(real["real_nodes"] / real["n_node"]),
        "edge_fill": float(real["real_edges"] / max(real["n_edge"], 1)),
        "graph_fill": float(real["real_graphs"] / real["n_graph"]),
        "graphs_seen": int(real["real_graphs"]),
        "epochs": float(real["real_graphs"] / max(len(ds.splits.train), 1)),
        "final_loss": float(steps_df["loss"].iloc[-1]),
        "val_rmse": final("val", "rmse"), "val_mae": final("val", "mae"),
        "test_rmse": final("test", "rmse"), "test_mae": final("test", "mae"),
        "val_graphs": int(final("val", "graphs")) if "val" in tc.eval_splits else 0,
        "test_graphs": int(final("test", "graphs")) if "test" in tc.eval_splits else 0,
        "skipped_per_epoch": int(epochs_df["skipped"].max()) if len(epochs_df) else 0,
        "jax_backend": prov["jax_backend"], "device_kind": prov["device_kind"], "cpu_model": prov["cpu_model"],
        "cpu_affinity": prov["cpu_affinity"], "allocator": prov["allocator"],
        "git_commit": prov["git_commit"],
    }
    # time-to-train INCLUDING compilation: every step's assembly + update, compiling and warm-up
    # steps included, evaluation excluded (the study's mean over the run is of this kind)
    s["train_wall_s"] = float(steps_df["combined_ms"].sum() / 1e3)
    s["ms_per_step_incl_compile"] = s["train_wall_s"] * 1e3 / len(steps_df)
    s["graphs_per_s_incl_compile"] = s["graphs_seen"] / s["train_wall_s"] if s["train_wall_s"] > 0 else float("nan")
    n_train = len(ds.splits.train)
    s["epoch_time_basis"] = "steady-state graphs_per_s (epoch_time_s_incl_compile: graphs_per_s_incl_compile)"
    s["epoch_time_s"] = n_train / s["graphs_per_s"] if s["graphs_per_s"] > 0 else float("nan")
    s["epoch_time_s_incl_compile"] = n_train / s["graphs_per_s_incl_compile"]
    s["status"] = "complete"
    return s
