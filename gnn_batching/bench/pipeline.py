"""``gnn-batching bench pipeline``: one training step end to end, the host path against the
device-resident path, on the same batches in one command.

For each (model, method, batch size): the first ``n_batches`` planned batches of one seeded
shuffle of the training split, cycled for ``steps`` steps per path, three ways:

* ``host``: NumPy assembly (``batching/assemble.py``), the copy to the device, the step;
* ``device``: the graph indices sent, the batch gathered on the device (``train/device_store.py``),
  the step;
* ``device_only``: the step alone on batches already on the device (the floor both approach).

Every shape is compiled in an untimed warm-up; the paths then take turns in blocks of ``block``
steps, in an order rotated every block (so drift in the machine's speed, and whatever running
first or after another path does, hits all alike), and each reports the median step.
``device_speedup`` = host / device (> 1: the device path is faster); ``*_range`` gives the lowest
and highest value of a ratio computed block by block: how far one block's reading can stray.

* ``device_k``: the device path with ``k`` steps per dispatch (``train.steps_per_call``): ``k``
  gathered batches of one shape stacked and run in one ``lax.scan``, its time / ``k`` per step;
  ``k_speedup`` = device / device_k, ``k_over_host`` = host / device_k. Only for shapes that ``k``
  of the sampled batches share (NaN otherwise, e.g. static-64, whose shapes rarely repeat ``k`` times in a row).
"""

from __future__ import annotations

import functools
import itertools
import time

import numpy as np

from gnn_batching.data import DatasetSpec
from gnn_batching.io import bounded_percent, text_table


def run_pipeline_bench(spec: DatasetSpec, models: list[str], methods: list[str], batch_sizes: list[int],
                       steps: int = 60, n_batches: int = 16, block: int = 10, seed: int = 0, k: int = 8) -> list[dict]:
    """One row per (model, method, batch size): median ms per step of each path and their ratios."""
    import jax

    from gnn_batching.batching import BatchingConfig
    from gnn_batching.batching.assemble import assemble
    from gnn_batching.data import load_dataset
    from gnn_batching.models import ModelConfig, make_model
    from gnn_batching.train.calls import multi_step, stack
    from gnn_batching.train.device_store import DeviceStore
    from gnn_batching.train.layouts import init_graph, steps_for
    from gnn_batching.train.ragged_steps import autobatch_method
    from gnn_batching.train.steps import init_state, make_optimizer

    ds = load_dataset(spec, verbose=False)
    store, targets = ds.store, ds.targets()
    dev = DeviceStore(store, targets)
    order = np.random.default_rng([seed, 0]).permutation(ds.splits.train)
    rows = []
    for model_name, method_name, bs in itertools.product(models, methods, batch_sizes):
        model = make_model(ModelConfig(name=model_name), store.n_species)
        method, _ = autobatch_method(BatchingConfig(method=method_name, batch_size=bs), model, store, ds.splits.train,
                                     targets)
        if method.layout != "disjoint-union":  # one GraphsTuple per step (ragged autobatch included)
            continue
        plan = method.plan(order)
        n = min(max(n_batches, k), len(plan))
        work = [(plan.batch(b), tuple(int(x) for x in plan.shapes[b])) for b in range(n)]
        train_step, _ = steps_for(method.steps_layout, model, ds.stats)
        first = assemble(store, work[0][0], work[0][1], targets)
        state = init_state(model, make_optimizer(1e-4, 100_000, 0.96, True),
                           init_graph(method.steps_layout, first.arrays), seed)
        placed = [jax.device_put(assemble(store, i, s, targets).arrays) for i, s in work]

        def host(i, s):
            return jax.device_put(assemble(store, i, s, targets).arrays)

        def device(i, s):
            return dev.gather(dev.slots(i, s[2]), s[0], s[1])

        for i, s in work:  # compile every shape, and the gathers, untimed
            jax.block_until_ready(train_step(state, host(i, s)))
            jax.block_until_ready(train_step(state, device(i, s)))
        by_shape: dict = {}
        for i, s in work:
            by_shape.setdefault(s, []).append(i)
        calls = [(members[c : c + k], s) for s, members in by_shape.items() for c in range(0, len(members) - k + 1, k)]
        steps_k = multi_step(train_step) if k > 1 and calls else None
        if steps_k is not None:
            for members, s in calls:
                jax.block_until_ready(steps_k(state, stack([device(i, s) for i in members])))
        paths = ["host", "device", "device_only"] + (["device_k"] if steps_k is not None else [])
        times: dict[str, list[list[float]]] = {name: [] for name in paths}  # per block, ms per step
        for blk, step in enumerate(range(0, steps, block)):
            # the paths take turns in a rotated order, so none always runs first (or after another)
            for name in paths[blk % len(paths):] + paths[: blk % len(paths)]:
                ms: list[float] = []
                times[name].append(ms)
                if name == "device_k":
                    for c in range(max(block // k, 1)):
                        members, s = calls[(step // k + c) % len(calls)]
                        t0 = time.perf_counter()
                        state, metrics = steps_k(state, stack([device(i, s) for i in members]))
                        jax.block_until_ready((state, metrics))
                        ms.append((time.perf_counter() - t0) * 1e3 / k)
                    continue
                make = {"host": host, "device": device, "device_only": None}[name]
                for j in range(step, min(step + block, steps)):
                    i, s = work[j % n]
                    t0 = time.perf_counter()
                    arrays = placed[j % n] if make is None else make(i, s)
                    state, metrics = train_step(state, arrays)
                    jax.block_until_ready((state, metrics))
                    ms.append((time.perf_counter() - t0) * 1e3)
        med = {name: float(np.median(np.concatenate(times[name]))) if times.get(name) else float("nan")
               for name in (*paths, "device_k")}
        spread = functools.partial(_block_ratio_range, times)
        rows.append({"model": model_name, "method": method_name, "batch_size": bs, "steps": steps, "batches": n,
                     "blocks": len(times["host"]),
                     "host_ms": med["host"], "device_ms": med["device"], "device_only_ms": med["device_only"],
                     "k": k, "device_k_ms": med["device_k"], "k_speedup": med["device"] / med["device_k"],
                     "device_speedup": med["host"] / med["device"],
                     "k_over_host": med["host"] / med["device_k"],
                     "device_speedup_range": spread("host", "device"), "k_speedup_range": spread("device", "device_k"),
                     "k_over_host_range": spread("host", "device_k"),
                     "host_overhead_fraction": 1 - med["device_only"] / med["host"],
                     "device_path_overhead_fraction": 1 - med["device_only"] / med["device"],
                     "device_store_bytes": dev.nbytes, "backend": jax.default_backend(),
                     "device_kind": jax.devices()[0].device_kind})
    return rows


def _block_ratio_range(times: dict[str, list[list[float]]], num: str, den: str) -> list[float]:
    """The ratio median(num) / median(den) block by block: its lowest and highest (the noise)."""
    if not (times.get(num) and times.get(den)):
        return [float("nan")] * 2
    r = [np.median(a) / np.median(b) for a, b in zip(times[num], times[den])]
    return [float(min(r)), float(max(r))]


def format_pipeline(rows: list[dict]) -> str:
    """The rows as a text table with what each column is."""
    def ratio(r: dict, key: str) -> str:
        lo, hi = r[f"{key}_range"]
        return f"{r[key]:.2f}x ({lo:.2f}-{hi:.2f})" if np.isfinite(r[key]) else "-"

    head = ["model", "method", "bs", "host ms", "device ms", "device-only ms", "device path speedup",
            "host overhead", "device-path overhead", "device, K/call ms", "K speedup", "K / host path"]
    body = [[r["model"], r["method"], str(r["batch_size"]), f"{r['host_ms']:.2f}", f"{r['device_ms']:.2f}",
             f"{r['device_only_ms']:.2f}", ratio(r, "device_speedup"), bounded_percent(r["host_overhead_fraction"]),
             bounded_percent(r["device_path_overhead_fraction"]),
             f"{r['device_k_ms']:.2f} (K={r['k']})" if np.isfinite(r["device_k_ms"]) else "-",
             ratio(r, "k_speedup"), ratio(r, "k_over_host")] for r in rows]
    dev = f"{rows[0]['device_kind']} ({rows[0]['backend']})" if rows else "-"
    return text_table(head, body) + (
        f"\n{dev}; median ms per training step. host: NumPy assembly + copy + step; device: indices sent, batch "
        "gathered on the device + step; device-only: the step on batches already there; K/call: the device path "
        "with K steps per dispatch (a lax.scan), per step. Paths take turns in blocks on the same batches, in a "
        "rotated order. Speedups: > 1 = faster; in brackets the lowest and highest block-by-block ratio (noise). "
        "overhead = 1 - device-only / path ('~0% (measured -2%)*': device-only timed slower than the path, which an "
        "overhead cannot: timing noise, read as ~0%).")
