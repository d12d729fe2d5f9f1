"""The summary row of a run, its whole schema in one place: every figure is computed here from the
raw per-step and evaluation records (so a reviewer can recompute it from ``steps.csv`` /
``evals.csv`` / ``precompile.csv``), plus the run's counters (compile counts, restarts,
checkpoints; :class:`~gnn_batching.train.counters.RunCounters`)."""

from __future__ import annotations

import os

import pandas as pd

from gnn_batching.config import resolve_prefetch
from gnn_batching.train.counters import RunCounters
from gnn_batching.train.instruments import peak_device_memory, summarise_steps

TRAIN_WALL_RULE = ("every step's assembly + update (compiling and warm-up steps included) + train shapes compiled "
                   "ahead of time, minus recompiles of shapes compiled before a restart (in restart_overhead_s)")
RESTART_OVERHEAD_RULE = ("recompiles of train-step shapes compiled before a restart (ahead of time: wall seconds; "
                         "in a step: its compile seconds) + checkpoint restores; not in train_wall_s")


def _repeated_in_steps(steps_df: pd.DataFrame) -> float:
    """Seconds the steps spent recompiling shapes compiled before a restart."""
    return float(steps_df["restart_compile_s"].sum()) if "restart_compile_s" in steps_df else 0.0


def train_wall_s(steps_df: pd.DataFrame, precompile_df: pd.DataFrame) -> float:
    """Time-to-train INCLUDING compilation, by the rule every method shares (``TRAIN_WALL_RULE``)."""
    ahead = precompile_df[(precompile_df["label"] == "train") & ~_restart(precompile_df)]
    return float(steps_df["combined_ms"].sum() / 1e3) - _repeated_in_steps(steps_df) + float(ahead["compile_s"].sum())


def _restart(pre: pd.DataFrame) -> pd.Series:
    return pre["restart"].astype(bool) if "restart" in pre else pd.Series(False, index=pre.index)


def build_summary(cfg, ds, steps_df: pd.DataFrame, evals_df: pd.DataFrame, epochs_df: pd.DataFrame,
                  counters: RunCounters, n_params: int, prov: dict, precompile_df: pd.DataFrame | None = None,
                  shard=None, wall_s: float = float("nan"), run_dir: str | None = None,
                  extra: dict | None = None, method_fields: dict | None = None) -> dict:
    """The flat summary of a finished run.

    Args:
        cfg: the run's ``RunConfig``.
        ds: the loaded ``Dataset`` (split sizes, target and unit).
        steps_df: one row per training step (``steps.csv``; real and padded sizes over every
          host's devices).
        evals_df: one row per (evaluation step, split) (``evals.csv``).
        epochs_df: per-epoch batcher statistics (``epochs.csv``).
        counters: the run's counters; ``counters.compile`` is the compile monitor's state.
        n_params: number of model parameters.
        prov: the run's provenance.
        precompile_df: shapes compiled ahead of time and their seconds (``precompile.csv``).
        shard: the devices and hosts of a data-parallel run (None: one device).
        wall_s: the whole run's wall-clock seconds (data loading and evaluation included).
        run_dir: the run directory.
        method_fields: the method's own columns (:meth:`BatchingMethod.summary_fields`).

    Returns:
        A flat dict of JSON-able values (NaN where a figure does not exist).
    """
    tc = cfg.train
    pre = precompile_df if precompile_df is not None else pd.DataFrame(columns=["label", "compile_s", "restart"])
    first_pre = pre[~_restart(pre)]
    ahead_s = {k: float(first_pre.loc[first_pre["label"] == k, "compile_s"].sum()) for k in ("train", "eval")}
    comp = counters.compile
    counts, seconds = comp.get("counts", {}), comp.get("seconds", {})
    timing = summarise_steps(steps_df, tc.warmup_steps)
    timed = steps_df[steps_df["step"] >= tc.warmup_steps]
    real = steps_df[["real_graphs", "real_nodes", "real_edges", "n_node", "n_edge", "n_graph"]].sum()

    def final(split: str, metric: str) -> float:
        rows = evals_df[evals_df["split"] == split] if len(evals_df) else evals_df
        return float(rows.iloc[-1][metric]) if len(rows) else float("nan")

    s = {
        "dataset": cfg.dataset.name, "model": cfg.model.name, "model_form": cfg.model.form,
        "method": cfg.batching.method,
        "batch_size": cfg.batching.batch_size, "seed": tc.seed, "steps": tc.num_train_steps, "n_params": n_params,
        "target": ds.target, "unit": ds.unit, "synthetic": ds.synthetic,
        "n_train": len(ds.splits.train), "limit": cfg.dataset.limit,
        **(method_fields or {}),
        "method_columns": ",".join(method_fields or {}),  # which columns are the method's own (comparison)
        "pad_edges": cfg.batching.pad_edges, "prefetch": resolve_prefetch(cfg.batching.prefetch, prov["jax_backend"]),
        "prefetch_setting": cfg.batching.prefetch,
        "real_graphs_per_batch_mean": float(steps_df["real_graphs"].mean()),
        **timing,
        # compiles an uninterrupted run would also have made; restarts' recompiles are apart
        "train_step_compiles": counts.get("train", 0),
        "eval_step_compiles": counts.get("eval", 0),
        "train_compile_seconds": seconds.get("train", 0.0),
        "eval_compile_seconds": seconds.get("eval", 0.0),
        "compile_seconds": sum(seconds.values()),
        "compilation_cache": tc.compilation_cache,
        "compile_cache_hits": sum(comp.get("cache_hits", {}).values()),
        "dispatch_cache_full": bool(comp.get("counted_by_events")),
        "compiles_in_timed_window": int(timed["compiled"].sum()),
        "train_compiles_ahead": int((first_pre["label"] == "train").sum()),
        "eval_compiles_ahead": int((first_pre["label"] == "eval").sum()),
        "train_ahead_compile_s": ahead_s["train"], "eval_ahead_compile_s": ahead_s["eval"],
        "plan_ms_per_epoch": float(epochs_df["plan_ms"].mean()) if "plan_ms" in epochs_df else float("nan"),
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
        "git_dirty": prov.get("git_dirty"),  # uncommitted changes: the commit alone does not name the code
    }
    # time-to-train INCLUDING compilation (the study's mean over the run is of this kind);
    # evaluation excluded; one rule for every method, restarts' repeated work excluded
    s["train_wall_s"] = train_wall_s(steps_df, pre)
    s["train_wall_basis"] = TRAIN_WALL_RULE
    restart_pre = pre[_restart(pre) & (pre["label"] == "train")]
    s["restarts"] = counters.restarts
    s["restart_compiles"] = int(sum(comp.get("restart_counts", {}).values()))
    s["train_restart_compiles"] = int(comp.get("restart_counts", {}).get("train", 0))
    s["eval_restart_compiles"] = int(comp.get("restart_counts", {}).get("eval", 0))
    s["restart_compile_s"] = float(sum(comp.get("restart_seconds", {}).values()))
    s["restart_overhead_s"] = _repeated_in_steps(steps_df) + float(restart_pre["compile_s"].sum()) + counters.restore_s
    s["restart_overhead_basis"] = RESTART_OVERHEAD_RULE
    s["train_wall_s_incl_restarts"] = s["train_wall_s"] + s["restart_overhead_s"]
    s["segments"] = int(steps_df["segment"].max()) + 1 if "segment" in steps_df else 1
    s["checkpoints_saved"], s["checkpoint_s"] = counters.checkpoints_saved, counters.checkpoint_s
    s["init_s"] = counters.init_s
    s["ms_per_step_incl_compile"] = s["train_wall_s"] * 1e3 / len(steps_df)
    s["graphs_per_s_incl_compile"] = s["graphs_seen"] / s["train_wall_s"] if s["train_wall_s"] > 0 else float("nan")
    n_train = len(ds.splits.train)
    s["epoch_time_basis"] = "steady-state graphs_per_s (epoch_time_s_incl_compile: graphs_per_s_incl_compile)"
    s["epoch_time_s"] = n_train / s["graphs_per_s"] if s["graphs_per_s"] > 0 else float("nan")
    s["epoch_time_s_incl_compile"] = n_train / s["graphs_per_s_incl_compile"]
    s["peak_device_memory_bytes"] = peak_device_memory()
    s["wall_s"] = wall_s
    s["concurrent_jobs"] = int(os.environ.get("GNN_BATCHING_JOBS", "1"))
    n_global = shard.n_global if shard else 1
    s.update({"n_devices": n_global, "n_local_devices": shard.n_local if shard else 1,
              "n_processes": shard.n_processes if shard else 1,
              # graphs of every host over every device (the records count the whole step)
              "graphs_per_s_per_device": s["graphs_per_s"] / n_global})
    # the device step alone on a sample of the run's steady steps, after training (device_probe.py)
    s.update({"device_step_ms": float("nan"), "host_overhead_fraction": float("nan"), "device_probe_batches": 0})
    s.update(extra or {})
    s["run_dir"] = run_dir
    s["status"] = "complete"
    return s
