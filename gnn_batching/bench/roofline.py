"""``gnn-batching bench roofline``: how far one training step is from what the machine can do.

For one (model, method, batch size), on the padded batches of one seeded shuffle of the
training split (as ``bench step``):

* **work**: the compiled step's FLOPs, transcendentals and bytes accessed, from XLA's own cost
  analysis (``compiled.cost_analysis()``), and the FLOPs of its dots counted from the HLO;
* **peaks**, measured in the same process just before the step: a dense f32 matmul (GFLOP/s),
  a row gather ``x[idx]`` and a segment sum (GB/s), each the best of a few timed calls;
* **roofline time** = max(FLOPs / matmul peak, bytes / best memory peak): the time a step
  doing this work could not beat on this machine (``bound`` says which term sets it);
* **measured time**: the median of ``steps`` timed steps (compiles and the first call of each
  shape excluded), and **efficiency** = roofline / measured (a fraction, 1 = at the limit);
* **time per op class** from a profile of a few more steps (``jax.profiler``, the step's
  thunks/kernels named as in the compiled HLO): each instant of a step is split equally among
  the operations running at it, so the classes (dots, transcendental, gather, scatter, reduce,
  elementwise, other) plus ``gaps`` (no operation running: dispatch, synchronisation, thread
  hand-over) add up to the profiled step's wall time.

The profile is read from the Perfetto trace JAX writes; on a backend whose trace names no HLO
operation the classes are reported as unavailable (the roofline figures do not need them).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict

import numpy as np

log = logging.getLogger(__name__)

CLASSES = ("dot", "transcendental", "gather", "scatter", "reduce", "elementwise", "other")
_TRANSCENDENTAL = {"exponential", "log", "log-plus-one", "exponential-minus-one", "tanh", "logistic", "power",
                   "sqrt", "rsqrt", "sine", "cosine", "erf", "atan2", "cbrt"}
_ELEMENTWISE = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "select", "compare", "negate", "abs",
                "convert", "broadcast", "bitcast", "reshape", "transpose", "copy", "constant", "parameter", "iota",
                "slice", "concatenate", "pad", "dynamic-slice", "dynamic-update-slice", "and", "or", "not", "sign",
                "clamp", "tuple", "get-tuple-element", "bitcast-convert", "floor", "ceil", "round-nearest-even",
                "round-nearest-afz", "is-finite", "xor", "shift-left", "shift-right-logical", "remainder",
                "reverse", "exponent", "real", "imag", "after-all", "partition-id", "replica-id"}
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (.*?) ([\w\-]+)\((.*)$")
_COMP = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_SHAPE = re.compile(r"^[a-z0-9]+\[([\d,]*)\]")


# ---------------------------------------------------------------------------------------------
# the compiled program: op classes and dot FLOPs from the HLO text


def _dims(shape: str) -> list[int] | None:
    m = _SHAPE.match(shape.strip())
    if not m:
        return None
    return [int(x) for x in m.group(1).split(",") if x]


def parse_hlo(text: str) -> dict:
    """Computations of an HLO module's text: ``{name: [(instr, shape, opcode, rest), ...]}`` and
    the entry computation's name (key ``"__entry__"``)."""
    comps: dict = {}
    cur = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):  # a computation's header
            m = _COMP.match(line)
            cur = m.group(1) if m else None
            if cur is not None:
                comps[cur] = []
                if line.startswith("ENTRY"):
                    comps["__entry__"] = cur
            continue
        if cur is None:
            continue
        if line.strip() == "}":
            cur = None
            continue
        m = _INSTR.match(line)
        if m:
            comps[cur].append((m.group(1), m.group(2), m.group(3), m.group(4)))
    return comps


def _called(rest: str) -> list[str]:
    return re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", rest)


def _dot_flops(instrs: list, shapes: dict, name: str, rest: str, shape: str) -> float:
    out = _dims(shape) or []
    ops = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
    lhs = shapes.get(ops[0]) if ops else None
    m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
    if lhs is None or m is None:
        return 0.0
    k = 1
    for d in (int(x) for x in m.group(1).split(",") if x):
        k *= lhs[d]
    return 2.0 * float(np.prod(out, dtype=np.float64)) * k


def classify(text: str) -> dict:
    """Each operation of the entry computation: ``{name: (class, dot FLOPs)}``, from the
    opcodes it runs (a fusion: those of the computation it calls, recursively)."""
    comps = parse_hlo(text)
    entry = comps.get("__entry__")
    memo: dict = {}

    def content(comp: str, depth: int = 0) -> tuple[set, float]:
        if comp in memo:
            return memo[comp]
        ops, flops = set(), 0.0
        instrs = comps.get(comp, [])
        shapes = {n: _dims(s) for n, s, _, _ in instrs}
        for n, s, op, rest in instrs:
            ops.add(op)
            if op in ("dot", "convolution"):
                flops += _dot_flops(instrs, shapes, n, rest, s)
            if depth < 8:
                for c in _called(rest):
                    sub_ops, sub_flops = content(c, depth + 1)
                    ops |= sub_ops
                    flops += sub_flops
        memo[comp] = (ops, flops)
        return memo[comp]

    out = {}
    if entry is None:
        return out
    instrs = comps[entry]
    shapes = {n: _dims(s) for n, s, _, _ in instrs}
    for n, s, op, rest in instrs:
        ops, flops = {op}, 0.0
        if op in ("dot", "convolution"):
            flops = _dot_flops(instrs, shapes, n, rest, s)
        for c in _called(rest):
            sub_ops, sub_flops = content(c)
            ops |= sub_ops
            flops += sub_flops
        out[n] = (_class_of(ops, n), flops)
    return out


def _class_of(ops: set, name: str) -> str:
    if ops & {"dot", "convolution"} or name.startswith(("ynn_fusion", "dot", "cublas", "gemm")):
        return "dot"
    if ops & {"scatter"}:
        return "scatter"
    if ops & {"gather"}:
        return "gather"
    if ops & _TRANSCENDENTAL:
        return "transcendental"
    if ops & {"reduce", "reduce-window", "sort"}:
        return "reduce"
    if ops <= (_ELEMENTWISE | {"fusion"}):
        return "elementwise"
    return "other"


# ---------------------------------------------------------------------------------------------
# the profile: wall time per op class


def _norm(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")


def attribute(events: list[tuple[float, float, str]], windows: list[tuple[float, float]],
              classes: dict[str, str], async_dots: bool = False) -> tuple[dict, float, float]:
    """Split each window's wall time among the operations running in it.

    Args:
      events: ``(start, end, name)`` of every operation event (any thread or stream).
      windows: ``(start, end)`` of each profiled step.
      classes: operation name -> class (names normalised: ``.``/``-`` as ``_``).

    Returns:
      ``(class -> summed ms, gap ms, wall ms)`` over all windows: at each instant the running
      operations share it equally; an instant with none running is a gap, except with
      ``async_dots`` (XLA's CPU runtime, which runs a plain ``dot`` asynchronously on its thread
      pool: the dot's trace event marks its launch only), where an instant with none running
      after a plain dot was launched and before the window's last operation ended is charged to
      the dots (its multiplication is still running). Class ms + gap ms = wall ms.
    """
    per = defaultdict(float)
    gap = wall = 0.0
    for w0, w1 in windows:
        pts = []
        for s, e, name in events:
            s, e = max(s, w0), min(e, w1)
            if e > s:
                pts.append((s, 1, name))
                pts.append((e, -1, name))
        pts.sort(key=lambda p: (p[0], p[1]))
        running: dict[str, int] = defaultdict(int)
        t, launched = w0, False
        for x, kind, name in pts:
            if x > t:
                active = [n for n, c in running.items() for _ in range(c)]
                if active:
                    share = (x - t) / len(active)
                    for n in active:
                        per[classes.get(n, "other")] += share
                elif async_dots and launched:
                    per["dot"] += x - t
                else:
                    gap += x - t
                t = x
            running[name] += kind
            if kind > 0 and name.startswith("dot") and classes.get(name) == "dot":
                launched = True
            if running[name] == 0:
                del running[name]
        gap += w1 - t
        wall += w1 - w0
    return {k: v / 1e3 for k, v in per.items()}, gap / 1e3, wall / 1e3


def read_trace(folder: str) -> list[dict]:
    """The events of the Perfetto trace JAX wrote under ``folder`` (empty if none)."""
    for root, _, files in os.walk(folder):
        for f in files:
            if f == "perfetto_trace.json.gz":
                with gzip.open(os.path.join(root, f), "rt") as fh:
                    d = json.load(fh)
                return d["traceEvents"] if isinstance(d, dict) else d
    return []


def profile_classes(run_step, n_steps: int, classes: dict[str, tuple[str, float]]) -> dict:
    """Profile ``n_steps`` calls of ``run_step()`` (each blocking until done) and attribute their
    wall time to op classes (:func:`attribute`). Returns ``{"class_ms": {...} per step, "gap_ms",
    "profiled_ms", "matched"}``, or ``{}`` when the trace names none of the step's operations."""
    import jax

    names = {_norm(n): c for n, (c, _) in classes.items()}
    folder = tempfile.mkdtemp(prefix="gnnb-roofline-")
    try:
        jax.profiler.start_trace(folder, create_perfetto_trace=True)
        try:
            for _ in range(n_steps):
                with jax.profiler.TraceAnnotation("gnn_batching_step"):
                    run_step()
        finally:
            jax.profiler.stop_trace()
        events = read_trace(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    windows, ops = [], []
    for e in events:
        if e.get("ph") != "X":
            continue
        s, d = float(e.get("ts", 0.0)), float(e.get("dur", 0.0))
        if e.get("name") == "gnn_batching_step":
            windows.append((s, s + d))
        elif _norm(str(e.get("name", ""))) in names:
            ops.append((s, s + d, _norm(e["name"])))
    if not windows or not ops:
        return {}
    per, gap, wall = attribute(ops, windows, names, async_dots=jax.default_backend() == "cpu")
    k = len(windows)
    return {"class_ms": {c: per.get(c, 0.0) / k for c in CLASSES}, "gap_ms": gap / k, "profiled_ms": wall / k,
            "matched": len({n for _, _, n in ops})}


# ---------------------------------------------------------------------------------------------
# the machine's peaks, measured


def _best_time(fn, args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))  # compile + first call
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peaks(repeats: int = 7, matmul_n: int = 1024, rows: int = 4096, edges: int = 1 << 18,
                  width: int = 64, seed: int = 0) -> dict:
    """The device's peaks, measured now: ``matmul_gflops`` (f32 ``(n, n) @ (n, n)``, 2 n^3 FLOPs),
    ``gather_gbs`` (``x[idx]``: ``edges`` rows of ``width`` f32 from ``rows``; bytes = rows read +
    rows written + indices) and ``segment_gbs`` (``segment_sum`` of ``edges`` rows into ``rows``
    segments; bytes = data + ids + output), each the best of ``repeats`` timed calls."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    a = jax.device_put(rng.standard_normal((matmul_n, matmul_n), np.float32))
    b = jax.device_put(rng.standard_normal((matmul_n, matmul_n), np.float32))
    t_mm = _best_time(jax.jit(jnp.matmul), (a, b), repeats)
    x = jax.device_put(rng.standard_normal((rows, width), np.float32))
    idx = jax.device_put(rng.integers(0, rows, edges).astype(np.int32))
    data = jax.device_put(rng.standard_normal((edges, width), np.float32))
    t_g = _best_time(jax.jit(lambda x, i: x[i]), (x, idx), repeats)
    t_s = _best_time(jax.jit(lambda d, i: jax.ops.segment_sum(d, i, rows)), (data, idx), repeats)
    row = 4 * width
    return {
        "matmul_gflops": 2.0 * matmul_n**3 / t_mm / 1e9,
        "gather_gbs": (2 * edges * row + 4 * edges) / t_g / 1e9,
        "segment_gbs": (edges * row + 4 * edges + rows * row) / t_s / 1e9,
    }


# ---------------------------------------------------------------------------------------------
# the step


def roofline_row(flops: float, bytes_: float, measured_ms: float, peaks: dict) -> dict:
    """The roofline figures of a step doing ``flops`` and moving ``bytes_`` in ``measured_ms``."""
    compute_ms = flops / (peaks["matmul_gflops"] * 1e9) * 1e3
    bw = max(peaks["gather_gbs"], peaks["segment_gbs"])
    memory_ms = bytes_ / (bw * 1e9) * 1e3
    roof = max(compute_ms, memory_ms)
    return {"compute_ms": compute_ms, "memory_ms": memory_ms, "roofline_ms": roof,
            "bound": "compute" if compute_ms >= memory_ms else "memory",
            "efficiency": roof / measured_ms if measured_ms > 0 else float("nan")}


def prepare_step(ds, model_name: str, method_name: str, batch_size: int, n_batches: int = 8, seed: int = 0,
                 form: str = "sparse", model=None):
    """``(train_step, state, device batches, host batches)`` of a model on the first
    ``n_batches`` padded batches of one seeded shuffle of ``ds``'s training split (``model``: a
    module to use instead of the registered one, with the same batches)."""
    import itertools

    import jax

    from gnn_batching.batching import BatchingConfig
    from gnn_batching.models import ModelConfig, make_model
    from gnn_batching.train.layouts import init_graph, steps_for
    from gnn_batching.train.ragged_steps import autobatch_method
    from gnn_batching.train.steps import init_state, make_optimizer

    store, targets = ds.store, ds.targets()
    order = np.random.default_rng([seed, 0]).permutation(ds.splits.train)
    registered = make_model(ModelConfig(name=model_name, form=form), store.n_species)
    method, _ = autobatch_method(BatchingConfig(method=method_name, batch_size=batch_size), registered, store,
                                 ds.splits.train, targets)
    plan = method.plan(order)
    host = list(itertools.islice(method.iterate(store, plan, targets), min(n_batches, len(plan))))
    dev = [jax.device_put(b.arrays) for b in host]
    tx = make_optimizer(1e-4, 100_000, 0.96, True)
    model = registered if model is None else model
    train_step, _ = steps_for(method.steps_layout, model, ds.stats)
    state = init_state(model, tx, init_graph(method.steps_layout, host[0].arrays), seed)
    return train_step, state, dev, host


def time_step(train_step, state, dev: list, steps: int):
    """Every shape compiled untimed, then ``steps`` timed steps cycling over ``dev``: ``(state,
    seconds per step)``."""
    import jax

    for b in dev:
        state, out = train_step(state, b)
    jax.block_until_ready(state)
    times = np.empty(steps)
    for i in range(steps):
        t0 = time.perf_counter()
        state, out = train_step(state, dev[i % len(dev)])
        jax.block_until_ready((state, out))
        times[i] = time.perf_counter() - t0
    return state, times


class _Runner:
    """One formulation's step on the shared batches: ``call(i)`` runs batch ``i`` to completion."""

    def __init__(self, step, state, batches: list, lowered):
        self.step, self.state, self.batches, self.lowered = step, state, batches, lowered

    def call(self, i: int) -> None:
        import jax

        self.state, out = self.step(self.state, self.batches[i % len(self.batches)])
        jax.block_until_ready((self.state, out))


def _runner(form: str, ds, model_name: str, method_name: str, batch_size: int, seed: int) -> _Runner:
    """``ours`` (the registered model), ``reference`` (its plain formulation,
    :mod:`gnn_batching.models.reference`) or ``study`` (:mod:`gnn_batching.study.step`)."""
    import jax

    from gnn_batching.errors import UserError

    if form == "ours":
        step, state, dev, _ = prepare_step(ds, model_name, method_name, batch_size, seed=seed)
        return _Runner(step, state, dev, lambda: step.lower(state, dev[0]))
    if form == "reference":
        from gnn_batching.models.reference import REFERENCE

        if model_name not in REFERENCE:
            raise UserError(f"--compare reference: exists for {', '.join(REFERENCE)}, not {model_name!r}")
        model = REFERENCE[model_name](n_species=ds.store.n_species)
        step, state, dev, _ = prepare_step(ds, model_name, method_name, batch_size, seed=seed, model=model)
        return _Runner(step, state, dev, lambda: step.lower(state, dev[0]))
    if form == "study":
        from gnn_batching.study.step import make_study_step, study_model
        from gnn_batching.train.steps import make_optimizer

        model = study_model(model_name, ds.store.n_species)
        _, _, dev, _ = prepare_step(ds, model_name, method_name, batch_size, seed=seed)
        if not hasattr(dev[0], "graph"):
            raise UserError(f"--compare study: needs one GraphsTuple per step (not {method_name!r}'s layout)")
        tx = make_optimizer(1e-4, 100_000, 0.96, True)
        params = model.init(jax.random.PRNGKey(seed), dev[0].graph)["params"]
        def lead(tree):  # the pmap's leading device axis (one device)
            return jax.device_put(jax.tree_util.tree_map(lambda x: np.asarray(x)[None], tree))

        state = lead((params, tx.init(params)))
        batches = [lead((b.graph, b.targets, b.mask)) for b in dev]
        pstep = make_study_step(model, float(ds.stats.mean), float(ds.stats.std), tx)

        def step(st, b):
            return pstep(st, *b)

        return _Runner(step, state, batches, lambda: pstep.lower(state, *batches[0]))
    raise UserError(f"--compare {form!r}: choose from reference, study")


def _cost(lowered) -> tuple[float, float, float, str]:
    compiled = lowered.compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return (float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0)),
            float(cost.get("transcendentals", 0.0)), compiled.as_text())


def run_roofline(spec, model_name: str, method_name: str, batch_size: int, steps: int = 30,
                 profile_steps: int = 8, seed: int = 0, compare: tuple[str, ...] = (), block: int = 5) -> dict:
    """One row: work, peaks, roofline, measured time, efficiency and time per op class.

    ``compare``: other formulations of the same model (``reference``, ``study``) timed on the
    same padded batches in the same process; the formulations take turns in blocks of ``block``
    steps, in an order rotated every block, so drift in the machine's speed hits all alike.
    Each gets ``<form>_measured_ms``, ``<form>_flops``, ``<form>_efficiency`` and
    ``speedup_vs_<form>`` (its median step / ours: the graphs/s ratio, the batches being the
    same), with ``speedup_vs_<form>_range``: the lowest and highest block-by-block ratio.
    """
    import jax

    from gnn_batching.allocator import active_allocator
    from gnn_batching.data import load_dataset

    ds = load_dataset(spec, verbose=False)
    forms = ("ours", *[f for f in compare if f != "ours"])
    runners = {f: _runner(f, ds, model_name, method_name, batch_size, seed) for f in forms}
    costs = {f: _cost(r.lowered()) for f, r in runners.items()}
    flops, bytes_, transcendentals, hlo = costs["ours"]
    ops = classify(hlo)
    dot_flops = sum(f for c, f in ops.values() if c == "dot")
    peaks = measure_peaks(seed=seed)
    ours = runners["ours"]
    for r in runners.values():  # compile every shape, untimed
        for i in range(len(r.batches)):
            r.call(i)
    times = {f: [] for f in forms}
    blocks = {f: [] for f in forms}
    n_blocks = max(1, -(-steps // block)) if len(forms) > 1 else 1
    per_block = block if len(forms) > 1 else steps
    k = 0
    for bi in range(n_blocks):
        order = forms[bi % len(forms):] + forms[:bi % len(forms)]
        for f in order:
            ts = []
            for _ in range(per_block):
                t0 = time.perf_counter()
                runners[f].call(k)
                ts.append(time.perf_counter() - t0)
                k += 1
            times[f].extend(ts)
            blocks[f].append(float(np.median(ts)))
    measured_ms = float(np.median(times["ours"]) * 1e3)
    prof = profile_classes(lambda: ours.call(0), profile_steps, ops) if profile_steps > 0 else {}
    host_batches = ours.batches
    row = {
        "dataset": spec.name, "model": model_name, "method": method_name, "batch_size": batch_size,
        "flops": flops, "bytes": bytes_, "transcendentals": transcendentals,
        "dot_flops": dot_flops, **peaks, **roofline_row(flops, bytes_, measured_ms, peaks),
        "measured_ms": measured_ms, "measured_ms_p90": float(np.percentile(times["ours"], 90) * 1e3),
        "steps": len(times["ours"]), "batches": len(host_batches),
        "graphs_per_step": float(np.mean([float(np.sum(b.mask)) for b in host_batches])),
        "device_kind": jax.devices()[0].device_kind, "backend": jax.default_backend(),
        "allocator": active_allocator(), "cpu_count": os.cpu_count(),
    }
    for f in forms[1:]:
        ms = float(np.median(times[f]) * 1e3)
        ratios = [b / a for a, b in zip(blocks["ours"], blocks[f])]
        row.update({f"{f}_measured_ms": ms, f"{f}_flops": costs[f][0], f"{f}_bytes": costs[f][1],
                    f"{f}_efficiency": roofline_row(costs[f][0], costs[f][1], ms, peaks)["efficiency"],
                    f"speedup_vs_{f}": ms / measured_ms,
                    f"speedup_vs_{f}_range": [float(min(ratios)), float(max(ratios))]})
    if prof:
        row.update({f"{c}_ms": v for c, v in prof["class_ms"].items()})
        row.update(gap_ms=prof["gap_ms"], profiled_ms=prof["profiled_ms"], profile_steps=profile_steps)
        row["dot_gflops"] = dot_flops / (prof["class_ms"]["dot"] * 1e6) if prof["class_ms"]["dot"] > 0 else None
    else:
        row["profile"] = "unavailable: the trace names none of the step's operations"
    return row


def format_roofline(rows: list[dict]) -> str:
    """The rows as text: the roofline table, then each row's time per op class."""
    lines = [f"{'model':<7} {'method':<10} {'bs':>4} {'GFLOP':>7} {'MB':>7} {'roof ms':>8} {'bound':<8} "
             f"{'measured':>9} {'efficiency':>10}"]
    for r in rows:
        lines.append(f"{r['model']:<7} {r['method']:<10} {r['batch_size']:>4} {r['flops'] / 1e9:>7.2f} "
                     f"{r['bytes'] / 1e6:>7.0f} {r['roofline_ms']:>8.1f} {r['bound']:<8} {r['measured_ms']:>9.1f} "
                     f"{r['efficiency']:>9.0%}")
    for r in rows:
        lines.append(f"{r['model']} bs {r['batch_size']}: peaks measured in this run: matmul "
                     f"{r['matmul_gflops']:.0f} GFLOP/s, gather {r['gather_gbs']:.0f} GB/s, segment sum "
                     f"{r['segment_gbs']:.0f} GB/s; compute {r['compute_ms']:.1f} ms, memory {r['memory_ms']:.1f} ms")
        if "gap_ms" in r:
            parts = [f"{c} {r[c + '_ms']:.1f}" for c in CLASSES if r.get(c + "_ms", 0) >= 0.05]
            dots = f"; dots run at {r['dot_gflops']:.0f} GFLOP/s" if r.get("dot_gflops") else ""
            lines.append(f"  time per op class (ms of a {r['profiled_ms']:.1f} ms profiled step): "
                         f"{', '.join(parts)}, gaps {r['gap_ms']:.1f}{dots}")
        else:
            lines.append(f"  {r.get('profile')}")
        for key in sorted(k for k in r if k.startswith("speedup_vs_") and not k.endswith("_range")):
            f = key[len("speedup_vs_"):]
            lo, hi = r[key + "_range"]
            lines.append(f"  vs {f} (same batches, same process): {r[f + '_measured_ms']:.1f} ms/step, "
                         f"{r[f + '_flops'] / 1e9:.2f} GFLOP, efficiency {r[f + '_efficiency']:.0%}; ours is "
                         f"{r[key]:.2f}x its graphs/s (block by block {lo:.2f}-{hi:.2f}x)")
    if rows:
        r = rows[0]
        lines.append(f"roofline = max(FLOPs / matmul peak, bytes / best memory peak); efficiency = roofline / median "
                     f"of {r['steps']} timed steps; device {r['device_kind']}, {r['cpu_count']} CPU cores, allocator "
                     f"{r['allocator']}")
    return "\n".join(lines)
