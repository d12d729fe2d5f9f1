"""The summary row of a run: every figure is computed here from the raw per-step and evaluation
records (so a reviewer can recompute it from ``steps.csv`` / ``evals.csv``)."""

from __future__ import annotations

import pandas as pd

from gnn_batching.train.instruments import CompileMonitor, summarise_steps


def build_summary(cfg, ds, steps_df: pd.DataFrame, evals_df: pd.DataFrame, epochs_df: pd.DataFrame,
                  monitor: CompileMonitor, n_params: int, prov: dict,
                  precompile_df: pd.DataFrame | None = None) -> dict:
    """The flat summary of a finished run.

    Args:
        cfg: the run's ``RunConfig``.
        ds: the loaded ``Dataset`` (split sizes, target and unit).
        steps_df: one row per training step (``steps.csv``).
        evals_df: one row per (evaluation step, split) (``evals.csv``).
        epochs_df: per-epoch batcher statistics (``epochs.csv``).
        monitor: the run's compile monitor (counts and seconds per step function).
        n_params: number of model parameters.
        prov: the run's provenance.
        precompile_df: shapes compiled ahead of time and their seconds (``precompile.csv``).

    Returns:
        A flat dict of JSON-able values (NaN where a figure does not exist).
    """
    tc = cfg.train
    pre = precompile_df if precompile_df is not None else pd.DataFrame(columns=["label", "compile_s"])
    ahead_s = {k: float(pre.loc[pre["label"] == k, "compile_s"].sum()) for k in ("train", "eval")}
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
        "budget": cfg.batching.budget if cfg.batching.method == "dynamic" else None,
        "buckets": int(cfg.batching.buckets) if cfg.batching.method == "buckets" else None,
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
        "train_compiles_ahead": int((pre["label"] == "train").sum()),
        "eval_compiles_ahead": int((pre["label"] == "eval").sum()),
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
    # time-to-train INCLUDING compilation: every step's assembly + update, compiling and warm-up
    # steps included, plus train-step shapes compiled ahead of time; evaluation excluded (the
    # study's mean over the run is of this kind)
    s["train_wall_s"] = float(steps_df["combined_ms"].sum() / 1e3) + ahead_s["train"]
    s["ms_per_step_incl_compile"] = s["train_wall_s"] * 1e3 / len(steps_df)
    s["graphs_per_s_incl_compile"] = s["graphs_seen"] / s["train_wall_s"] if s["train_wall_s"] > 0 else float("nan")
    n_train = len(ds.splits.train)
    s["epoch_time_basis"] = "steady-state graphs_per_s (epoch_time_s_incl_compile: graphs_per_s_incl_compile)"
    s["epoch_time_s"] = n_train / s["graphs_per_s"] if s["graphs_per_s"] > 0 else float("nan")
    s["epoch_time_s_incl_compile"] = n_train / s["graphs_per_s_incl_compile"]
    s["status"] = "complete"
    return s
