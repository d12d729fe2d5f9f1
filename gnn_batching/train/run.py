"""One instrumented training run: config -> run directory with every measurement.

Run directory contents (all written atomically; ``summary.json`` is written LAST, so its
presence means the run finished):

* ``config.yaml``      the resolved config
* ``provenance.json``  git commit, package versions, JAX backend/device, CPU, cores
* ``data.json``        facts derived from the data: split sizes, target stats, budget, method
* ``steps.csv``        one row per step: timings, compile flags, real and padded sizes, loss
* ``evals.csv``        one row per (step, split): RMSE, MAE (physical units), graphs evaluated
* ``epochs.csv``       per-epoch batcher statistics (batches, graphs, shapes, fill)
* ``summary.json``     the flat summary row
"""

from __future__ import annotations

import datetime
import math
import os
import time

import jax
import numpy as np
import yaml

from gnn_batching.batching.loader import make_loaders
from gnn_batching.data import load_dataset
from gnn_batching.errors import UserError
from gnn_batching.io import write_csv_atomic, write_json_atomic, write_text_atomic
from gnn_batching.models import make_model
from gnn_batching.progress import Progress
from gnn_batching.train.config import RunConfig
from gnn_batching.train.instruments import CompileMonitor, StepLog, summarise_steps, timer
from gnn_batching.train.provenance import provenance
from gnn_batching.train.steps import count_params, init_state, make_optimizer, make_steps


def default_run_dir(cfg: RunConfig) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("results", "runs", f"{cfg.name}-{stamp}")


def evaluate(eval_step, params, loader, monitor: CompileMonitor) -> dict:
    """One ordered pass over a split (every graph exactly once, final partial batch included)."""
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
    if graphs != len(loader.index) - loader.epoch_stats[-1]["skipped"] or round(n) != graphs:
        raise RuntimeError(f"evaluation covered {graphs} graphs of {len(loader.index)}")  # an invariant
    return {"rmse": math.sqrt(sse / max(n, 1)), "mae": sae / max(n, 1), "graphs": graphs}


def run(cfg: RunConfig, out_dir: str | None = None, verbose: bool = True) -> dict:
    """Train and evaluate one configuration; returns the summary (also in ``summary.json``)."""
    out = out_dir or default_run_dir(cfg)
    if os.path.exists(os.path.join(out, "summary.json")):
        raise UserError(f"{out}: already holds a finished run (summary.json); choose another --out")
    os.makedirs(out, exist_ok=True)
    write_text_atomic(os.path.join(out, "config.yaml"), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    prov = provenance()
    write_json_atomic(os.path.join(out, "provenance.json"), prov)
    t_start = time.perf_counter()

    ds = load_dataset(cfg.dataset, verbose=verbose)
    tc, bc = cfg.train, cfg.batching
    method, train_loader, eval_loaders = make_loaders(bc, ds.store, ds.targets(), ds.splits, seed=tc.seed)
    write_json_atomic(os.path.join(out, "data.json"), {
        "dataset": cfg.dataset.name, "synthetic": ds.synthetic, "target": ds.target, "unit": ds.unit,
        "n_graphs": len(ds.store), "n_train": len(ds.splits.train), "n_val": len(ds.splits.val),
        "n_test": len(ds.splits.test), "train_mean": ds.stats.mean, "train_std": ds.stats.std,
        "n_species": ds.store.n_species, "species_z": ds.store.species_z.tolist(),
        "skipped_entries": len(ds.store.skipped), "batching": method.describe(),
    })

    model = make_model(cfg.model, ds.store.n_species)
    tx = make_optimizer(tc.lr, tc.decay_steps, tc.decay_rate, tc.staircase)
    train_step, eval_step = make_steps(model, tx, ds.stats)
    monitor = CompileMonitor()
    stream = train_loader.stream(bc.prefetch)
    log = StepLog()
    evals: list[dict] = []
    prog = Progress(f"run {cfg.name}", total=tc.steps, enabled=verbose)
    state = None
    graphs_seen = 0
    try:
        for step in range(tc.steps):
            t0 = timer()
            batch = next(stream)
            t1 = timer()
            if state is None:  # init outside the timed step (uses the first batch's shapes)
                state = init_state(model, tx, batch.graph, tc.seed)
                n_params = count_params(state.params)
                t1b = timer()
            else:
                t1b = t1
            with monitor.track("train", train_step) as info:
                state, metrics = train_step(state, batch.graph, batch.targets, batch.graph_mask)
                jax.block_until_ready((state, metrics))
            t2 = timer()
            loss = float(metrics["loss"])
            graphs_seen += batch.n_real_graphs
            n_node, n_edge, n_graph = batch.shape
            log.add(step=step, assembly_ms=(t1 - t0) * 1e3, update_ms=(t2 - t1b) * 1e3,
                    combined_ms=(t1 - t0 + t2 - t1b) * 1e3, compiled=info["compiled"],
                    compile_s=info["compile_s"], wait_ms=getattr(stream, "last_wait_s", float("nan")) * 1e3,
                    real_graphs=batch.n_real_graphs, real_nodes=batch.n_real_nodes, real_edges=batch.n_real_edges,
                    n_node=n_node, n_edge=n_edge, n_graph=n_graph, loss=loss, graphs_seen=graphs_seen)
            if not np.isfinite(loss):
                raise UserError(f"{cfg.name}: loss became {loss} at step {step}; lower train.lr?")
            last = step == tc.steps - 1
            if last or (tc.eval_every and (step + 1) % tc.eval_every == 0):
                for split in tc.eval_splits:
                    r = evaluate(eval_step, state.params, eval_loaders[split], monitor)
                    evals.append({"step": step + 1, "split": split, "graphs_seen": graphs_seen, **r})
            prog.update(step + 1, postfix=f"loss {loss:.4f}")
    finally:
        prog.close()
        if hasattr(stream, "close"):
            stream.close()
        monitor.close()

    import pandas as pd

    steps_df = log.frame()
    evals_df = pd.DataFrame(evals)
    write_csv_atomic(os.path.join(out, "steps.csv"), steps_df)
    write_csv_atomic(os.path.join(out, "evals.csv"), evals_df)
    epochs_df = pd.DataFrame(train_loader.epoch_stats)
    write_csv_atomic(os.path.join(out, "epochs.csv"), epochs_df)
    summary = build_summary(cfg, ds, steps_df, evals_df, epochs_df, monitor, n_params, prov)
    summary["wall_s"] = time.perf_counter() - t_start
    summary["concurrent_jobs"] = int(os.environ.get("GNN_BATCHING_JOBS", "1"))
    summary["run_dir"] = os.path.abspath(out)
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
        "git_commit": prov["git_commit"],
    }
    s["epoch_time_s"] = len(ds.splits.train) / s["graphs_per_s"] if s["graphs_per_s"] > 0 else float("nan")
    s["status"] = "complete"
    return s
