"""``gnn-batching bench batching``: host assembly throughput per method and batch size.

For each (method, batch size) one epoch of the training split (one seeded shuffle shared by
every row) is assembled three ways, side by side in the same process:

* ours: plan + vectorised gather from the GraphStore (what training uses);
* reference: jraph's own utilities on the same graph order and the same shapes
  (``jraph.batch_np`` + ``jraph.pad_with_graphs`` per static batch; ``jraph.dynamically_batch``
  for ``dynamic``), over per-graph ``GraphsTuple``s built beforehand (not timed);
* copy: a plain memory copy of the same output bytes, batch by batch, into fresh buffers
  (which page-fault, like any freshly allocated output);
* reused copy: the same copies into one buffer reused for every batch (no faults: the floor
  for an assembler that reuses its output buffers).
"""

from __future__ import annotations

import platform
import time

import jraph
import numpy as np

from gnn_batching.batching.methods import BatchingConfig
from gnn_batching.batching.plan import EpochPlan
from gnn_batching.batching.registry import make_method
from gnn_batching.data import DatasetSpec, load_dataset
from gnn_batching.plugins import method_names
from gnn_batching.progress import Progress


def per_graph_tuples(store, index: np.ndarray) -> dict[int, jraph.GraphsTuple]:
    """One unpadded jraph ``GraphsTuple`` per store index: the input of jraph's own batching.

    Args:
      store: the dataset's ``GraphStore``.
      index: store indices, shape ``(k,)``.

    Returns:
      ``{store index: GraphsTuple}`` holding one graph each.
    """
    out = {}
    for i in index.tolist():
        a, b = store.node_offsets[i], store.node_offsets[i + 1]
        c, d = store.edge_offsets[i], store.edge_offsets[i + 1]
        out[i] = jraph.GraphsTuple(
            nodes=store.species[a:b].copy(), edges=store.edges[c:d].copy(),
            senders=store.senders[c:d].astype(np.int32), receivers=store.receivers[c:d].astype(np.int32),
            n_node=np.array([b - a], np.int32), n_edge=np.array([d - c], np.int32), globals=None)
    return out


def _time_ours(store, method, order, targets, pad_edges) -> tuple[float, EpochPlan]:
    """One epoch as training gets it: plan, then assemble every batch (both timed)."""
    t0 = time.perf_counter()
    plan = method.plan(order)
    for _ in method.iterate(store, plan, targets, pad_edges):
        pass
    return time.perf_counter() - t0, plan


def _time_reference(graphs, method, plan: EpochPlan) -> float:
    """jraph's own batching of the same groups: ``batch_np`` + ``pad_with_graphs`` to the plan's shape
    (``dynamically_batch`` for dynamic). A slots layout's summed shape counts no padding graph of
    its own, so jraph gets one more node and graph slot."""
    extra = 1 if method.layout == "slots" else 0
    t0 = time.perf_counter()
    if method.name == "dynamic":
        n, e, g = method.fixed_shape()
        for _ in jraph.dynamically_batch(iter([graphs[i] for i in plan.order.tolist()]), n, e, g):
            pass
    else:
        for b in range(len(plan)):
            batch = jraph.batch_np([graphs[i] for i in plan.batch(b).tolist()])
            n, e, g = (int(x) for x in plan.shapes[b])
            jraph.pad_with_graphs(batch, n + extra, e, g + extra)
    return time.perf_counter() - t0


def batch_bytes(shape) -> int:
    """Bytes of one padded batch of ``shape = (n_node, n_edge, n_graph)`` as assembled.

    Counts node species (int32), edge features (float32 x 4), senders, receivers, n_node,
    n_edge, targets and the graph mask: the memory a copy-only floor has to move.
    """
    n, e, g = (int(x) for x in shape)
    return n * 4 + e * (16 + 4 + 4) + g * (4 + 4 + 4 + 1)


def _time_copy(store, plan: EpochPlan) -> float:
    """Copy each batch's padded byte count out of the store's own edge array into a fresh
    buffer, walking through the store (cold, like a gather's source; no index arithmetic)."""
    src = store.edge_records.view(np.uint8)
    sizes = [batch_bytes(s) for s in plan.shapes]
    pos = 0
    t0 = time.perf_counter()
    for nb in sizes:
        if pos + nb > src.size:
            pos = 0
        dst = np.empty(nb, dtype=np.uint8)
        np.copyto(dst, src[pos : pos + nb])
        pos += nb
    return time.perf_counter() - t0


def _time_copy_reused(store, plan: EpochPlan) -> float:
    """The same copies into ONE buffer reused for every batch: no page faults on the destination
    (the floor for an assembler that reuses its output buffers)."""
    src = store.edge_records.view(np.uint8)
    sizes = [batch_bytes(s) for s in plan.shapes]
    dst = np.empty(max(sizes, default=0), dtype=np.uint8)
    dst[:] = 0  # touch every page once, outside the timing
    pos = 0
    t0 = time.perf_counter()
    for nb in sizes:
        if pos + nb > src.size:
            pos = 0
        np.copyto(dst[:nb], src[pos : pos + nb])
        pos += nb
    return time.perf_counter() - t0


def run_bench(spec: DatasetSpec, batch_sizes: list[int], methods: list[str] | None = None,
              pad_edges: str = "hub", use_cache: bool = True, repeats: int = 1) -> list[dict]:
    """Time host-side assembly of one epoch for each method and batch size.

    Args:
      spec: the dataset to load.
      batch_sizes: batch sizes to time (they count the padding graph).
      methods: method names (default: every method).
      pad_edges: where padding edges point (``hub`` or ``self``).
      use_cache: read the dataset from the on-disk cache.
      repeats: epochs timed per case; the fastest is kept.

    Returns:
      One row per (method, batch size): graphs/s of our assembler, of jraph's reference
      batching, of a plain copy of the same bytes, and the ratios between them.
    """
    ds = load_dataset(spec, use_cache=use_cache)
    store, targets = ds.store, ds.targets()
    methods = methods or list(method_names())
    order = np.random.default_rng([0, 0]).permutation(ds.splits.train)
    prog = Progress("bench", total=len(methods) * len(batch_sizes))
    prog.note(f"building {len(order)} per-graph GraphsTuples for the jraph reference (not timed)")
    graphs = per_graph_tuples(store, order)
    rows, done = [], 0
    for bs in batch_sizes:
        for m in methods:
            method = make_method(BatchingConfig(method=m, batch_size=bs, pad_edges=pad_edges), store, ds.splits.train)
            timed = [_time_ours(store, method, order, targets, pad_edges) for _ in range(repeats)]
            ours, plan = min(t for t, _ in timed), timed[0][1]  # planning is deterministic
            ref = min(_time_reference(graphs, method, plan) for _ in range(repeats))
            cp = min(_time_copy(store, plan) for _ in range(repeats))
            cpr = min(_time_copy_reused(store, plan) for _ in range(repeats))
            st = plan.stats(store.n_node, store.n_edge)
            g = st["graphs"]
            rows.append({
                "dataset": spec.name, "method": m, "batch_size": bs,
                "graphs_per_s": round(g / ours, 1),
                "reference_graphs_per_s": round(g / ref, 1),
                "speedup": round(ref / ours, 2),
                "copy_graphs_per_s": round(g / cp, 1),
                "vs_copy": round(ours / cp, 2),
                "reused_copy_graphs_per_s": round(g / cpr, 1),
                "vs_reused_copy": round(ours / cpr, 2),
                "node_fill": round(st["node_fill"], 4), "edge_fill": round(st["edge_fill"], 4),
                "graph_fill": round(st["graph_fill"], 4),
                "distinct_shapes": st["distinct_shapes"], "batches": st["batches"],
                "graphs_per_epoch": g, "split_size": len(order),
                "pad_edges": pad_edges, "synthetic": ds.synthetic,
                "machine": f"{platform.processor() or platform.machine()}",
            })
            done += 1
            prog.update(done, postfix=f"{m} bs={bs}: {rows[-1]['speedup']}x jraph")
    prog.close()
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`run_bench` as a fixed-width text table."""
    cols = [("method", "{:<13}"), ("batch_size", "{:>4}"), ("graphs_per_s", "{:>12,.0f}"),
            ("reference_graphs_per_s", "{:>10,.0f}"), ("speedup", "{:>8.1f}x"), ("copy_graphs_per_s", "{:>12,.0f}"),
            ("vs_copy", "{:>7.2f}x"), ("reused_copy_graphs_per_s", "{:>12,.0f}"), ("vs_reused_copy", "{:>7.2f}x"),
            ("node_fill", "{:>6.3f}"), ("edge_fill", "{:>6.3f}"),
            ("graph_fill", "{:>6.3f}"), ("distinct_shapes", "{:>6}"), ("graphs_per_epoch", "{:>8}"),
            ("split_size", "{:>8}")]
    head = ["method", "bs", "graphs/s", "jraph g/s", "speedup", "memcpy g/s", "vs copy", "reused g/s", "vs reus",
            "nfill", "efill", "gfill", "shapes", "graphs", "split"]
    widths = [13, 4, 12, 10, 9, 12, 8, 12, 8, 6, 6, 6, 6, 8, 8]
    lines = [" ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    for r in rows:
        lines.append(" ".join(fmt.format(r[c]) for c, fmt in cols))
    if rows and rows[0].get("synthetic"):
        lines.append("(dataset is SYNTHETIC)")
    return "\n".join(lines)


def run_device_bench(spec: DatasetSpec, batch_sizes: list[int], devices: int, methods: list[str] | None = None,
                     use_cache: bool = True, repeats: int = 1) -> list[dict]:
    """Time the assembly of one epoch's data-parallel steps (``devices`` batches per step): one
    device batch after another, every step's batches in parallel threads, and the loader's
    default (threads only for big batches, ``shard.PARALLEL_MIN_EDGES``).

    Returns:
      One row per (method, batch size): ms per step each way and the ratios to sequential; the
      default's figure is what a device step must take at least for assembly to keep up.
    """
    from gnn_batching.batching.loader import Loader
    from gnn_batching.batching.shard import Shard

    ds = load_dataset(spec, use_cache=use_cache)
    store, targets = ds.store, ds.targets()
    methods = methods or ["static-pow2", "dynamic", "buckets", "packed"]
    rows = []
    prog = Progress("bench devices", total=len(methods) * len(batch_sizes))
    for bs in batch_sizes:
        for m in methods:
            method = make_method(BatchingConfig(method=m, batch_size=bs), store, ds.splits.train)
            loader = Loader(store, targets, ds.splits.train, method, shuffle=True, shard=Shard(devices))
            pool, default_min = loader._pool, loader.parallel_min_edges
            times = {}
            for label, p, min_edges in (("sequential", None, 0), ("threaded", pool, 0), ("default", pool, default_min)):
                loader._pool, loader.parallel_min_edges = p, min_edges
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    n_steps = sum(1 for _ in loader.epoch(0))
                    best = min(best, time.perf_counter() - t0)
                times[label] = best * 1e3 / max(n_steps, 1)
            ms = {k: round(v, 3) for k, v in times.items()}  # the ratios are of the figures shown
            rows.append({"dataset": spec.name, "method": m, "batch_size": bs, "devices": devices, "steps": n_steps,
                         "sequential_ms_per_step": ms["sequential"], "threaded_ms_per_step": ms["threaded"],
                         "default_ms_per_step": ms["default"],
                         "ratio": round(ms["sequential"] / ms["threaded"], 2),
                         "default_ratio": round(ms["sequential"] / ms["default"], 2),
                         "padded_edges_per_device": int(method.plan(ds.splits.train).shapes[:, 1].max()),
                         "threads": pool._max_workers if pool is not None else 1,
                         "synthetic": ds.synthetic})
            prog.update(len(rows), postfix=f"{m} bs={bs}: {rows[-1]['ratio']}x")
    prog.close()
    return rows


def format_device_table(rows: list[dict]) -> str:
    """The rows of :func:`run_device_bench` as a text table."""
    lines = [f"{'method':<13} {'bs':>4} {'devices':>7} {'steps':>6} {'edges/dev':>9} {'sequential ms':>14} "
             f"{'threaded ms':>12} {'ratio':>6} {'default ms':>11} {'ratio':>6} {'threads':>7}"]
    for r in rows:
        lines.append(f"{r['method']:<13} {r['batch_size']:>4} {r['devices']:>7} {r['steps']:>6} "
                     f"{r['padded_edges_per_device']:>9} {r['sequential_ms_per_step']:>14.3f} "
                     f"{r['threaded_ms_per_step']:>12.3f} {r['ratio']:>5.2f}x {r['default_ms_per_step']:>11.3f} "
                     f"{r['default_ratio']:>5.2f}x {r['threads']:>7}")
    lines.append("ms per data-parallel step (one padded batch per device), assembly only; a device step shorter "
                 "than the threaded figure waits for data (see wait_ms in steps.csv).")
    return "\n".join(lines)
