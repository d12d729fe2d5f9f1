"""``gnn-batching bench step``: the jitted train step alone, per allocator setting.

For each (model, method, batch size) a fixed set of padded batches is assembled from one seeded
shuffle of the training split and placed on the device BEFORE timing; every distinct shape is
compiled in an untimed warm-up pass; then ``steps`` steps cycle over the batches, each timed
until ``jax.block_until_ready``. So the figure is the device step only: no assembly, no
host-to-device copy, no compilation.

Each allocator setting runs in its own fresh process (an allocator is chosen at process start),
and the parent prints each setting's ms/step and its ratio to ``system`` (glibc), measured in
the same invocation on the same machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np

from gnn_batching.command import cli_command
from gnn_batching.data import DatasetSpec


def time_steps(spec: DatasetSpec, models: list[str], methods: list[str], batch_sizes: list[int], steps: int,
               n_batches: int = 8, seed: int = 0, forms: tuple[str, ...] = ("sparse",),
               autobatch_mode: str = "auto") -> list[dict]:
    """Run in THIS process: one row per (model, form, method, batch size).

    ``forms``: ``sparse`` and/or ``dense`` (the dense per-graph models run with ``autobatch`` only;
    other methods are skipped for them). ``autobatch_mode``: as ``batching.autobatch_mode``; each
    row's ``layout`` (and, for autobatch, ``autobatch_mode_used``) says which step ran.
    """
    import itertools

    import jax

    from gnn_batching.allocator import active_allocator
    from gnn_batching.batching import BatchingConfig
    from gnn_batching.data import load_dataset
    from gnn_batching.models import ModelConfig, make_model
    from gnn_batching.train.layouts import init_graph, steps_for
    from gnn_batching.train.ragged_steps import autobatch_method
    from gnn_batching.train.steps import init_state, make_optimizer

    ds = load_dataset(spec, verbose=False)
    store, targets = ds.store, ds.targets()
    order = np.random.default_rng([seed, 0]).permutation(ds.splits.train)
    rows = []
    for model_name, form, method_name, bs in itertools.product(models, forms, methods, batch_sizes):
        if form == "dense" and method_name != "autobatch":
            continue
        model = make_model(ModelConfig(name=model_name, form=form), store.n_species)
        bcfg = BatchingConfig(method=method_name, batch_size=bs, autobatch_mode=autobatch_mode)
        method, mode = autobatch_method(bcfg, model, store, ds.splits.train, targets)
        plan = method.plan(order)
        k = min(n_batches, len(plan))
        host = list(itertools.islice(method.iterate(store, plan, targets), k))
        dev = [jax.device_put(b.arrays) for b in host]
        tx = make_optimizer(1e-4, 100_000, 0.96, True)
        train_step, _ = steps_for(method.steps_layout, model, ds.stats)
        state = init_state(model, tx, init_graph(method.steps_layout, host[0].arrays), seed)
        for b in dev:  # compile every shape, untimed
            state, out = train_step(state, b)
        jax.block_until_ready(state)
        times = np.empty(steps)
        for i in range(steps):
            t0 = time.perf_counter()
            state, out = train_step(state, dev[i % k])
            jax.block_until_ready((state, out))
            times[i] = time.perf_counter() - t0
        graphs = sum(host[i % k].n_real_graphs for i in range(steps))
        rows.append({
            "dataset": spec.name, "model": model_name, "form": form, "method": method_name, "batch_size": bs,
            "layout": method.steps_layout, **mode,
            "ms_per_step": float(np.median(times) * 1e3), "ms_per_step_mean": float(times.mean() * 1e3),
            "ms_per_step_p90": float(np.percentile(times, 90) * 1e3),
            "graphs_per_s": float(graphs / times.sum()), "steps": steps, "batches": k,
            "allocator": active_allocator(), "device_kind": jax.devices()[0].device_kind,
        })
    return rows


def run_bench_step(argv_worker: list[str], settings: list[str]) -> list[dict]:
    """Run the worker once per allocator setting, each in a fresh process; add ratios to system."""
    from gnn_batching.allocator import child_env
    from gnn_batching.errors import UserError
    from gnn_batching.progress import Progress

    rows: list[dict] = []
    prog = Progress("bench step", total=len(settings))
    for i, setting in enumerate(settings):
        cmd = cli_command(*argv_worker, "--worker")
        r = subprocess.run(cmd, env=child_env(setting), capture_output=True, text=True)
        if r.returncode != 0:
            raise UserError(f"bench step: the {setting!r} process failed:\n{r.stderr.strip()[-2000:]}")
        for row in json.loads(r.stdout.strip().splitlines()[-1]):
            rows.append({"setting": setting, **row})
        prog.update(i + 1, postfix=setting)
    prog.close()
    def key(r):
        return r["model"], r.get("form", "sparse"), r["method"], r["batch_size"]

    base = {key(r): r["ms_per_step"] for r in rows if r["setting"] == "system"}
    for r in rows:
        b = base.get(key(r))
        r["speedup_vs_system"] = b / r["ms_per_step"] if b else float("nan")
    return rows


def format_step_table(rows: list[dict]) -> str:
    """The rows of ``bench step`` as a fixed-width text table with ratios against the system allocator."""
    head = f"{'model':<7} {'form':<6} {'method':<12} {'step':<14} {'bs':>4} {'setting':<9} {'allocator':<9} " \
           f"{'ms/step':>9} {'p90':>8} " \
           f"{'graphs/s':>9} {'vs system':>9}"
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["model"], r.get("form", "sparse"), r["method"], r["batch_size"],
                                         r["setting"] != "system")):
        ratio = f"{r['speedup_vs_system']:.2f}x" if np.isfinite(r["speedup_vs_system"]) else "-"
        lines.append(f"{r['model']:<7} {r.get('form', 'sparse'):<6} {r['method']:<12} "
                     f"{r.get('layout', '-'):<14} {r['batch_size']:>4} "
                     f"{r['setting']:<9} {r['allocator']:<9} "
                     f"{r['ms_per_step']:>9.2f} {r['ms_per_step_p90']:>8.2f} {r['graphs_per_s']:>9.0f} {ratio:>9}")
    dev = rows[0]["device_kind"] if rows else "?"
    lines.append(f"median of {rows[0]['steps'] if rows else 0} timed steps per row (warm-up and compiles excluded), "
                 f"device {dev}, {os.cpu_count()} CPU cores; 'vs system' = glibc ms/step / this ms/step, same run")
    return "\n".join(lines)
