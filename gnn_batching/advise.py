"""``gnn-batching advise``: which batching method to use for a run of N steps, predicted in minutes.

What decides the answer can be measured without training N steps:

1. **Shapes.** Each method plans the epochs the run will see (the loader's own plans, the same
   seeded shuffles a run with ``train.seed`` makes), so the padded shapes of the first N steps,
   and hence the train-step compilations, are counted exactly, not estimated; shapes compiled
   ahead of time (``compile_ahead``) are added.
2. **Compilation.** A few of those shapes (the smallest, middle and largest by padded edges) are
   compiled for real: seconds per shape, with their range.
3. **Steady step.** Each compiled shape is then timed on its real batch, as a run times a step:
   host assembly and the copy to the device, then the jitted update (median of ``timed_steps``).
   One linear model of step time against the padded shape (nodes, edges) is fitted to every
   method's points; each method's own points calibrate it (measured / fitted), so the shapes that
   were not timed are predicted from the method's own level.
4. **Prediction.** Time to train = sum over the N planned steps of the predicted step time +
   compilations x seconds per shape + the process's first-compile overhead (paid once by every
   run). Its interval: compile seconds at their sampled minimum and maximum, steady steps at the
   timed steps' 10th and 90th percentiles over their median. graphs/s including compilation =
   graphs in the N steps / time to train.

The padding-free ideal: the same epoch order cut into batches of ``batch_size - 1`` graphs, each
padded to exactly its own size (+1 node, +1 graph), timed by the fitted model, compilation
excluded: the throughput no batching can beat on this machine by padding less. A method's
``efficiency_vs_ideal`` is its predicted graphs/s including compilation over the ideal's.

The recommendation is the method with the shortest predicted time to train; where the runner-up's
interval overlaps it, the reason says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gnn_batching.config import RunConfig
from gnn_batching.errors import ConfigError
from gnn_batching.io import bounded_percent, text_table
from gnn_batching.progress import Progress

DEFAULT_METHODS = ("static-pow2", "static-64", "dynamic", "buckets", "packed")


@dataclass
class _Planned:
    """The first N steps of a method's run: one row per step."""

    shapes: np.ndarray  # (N, 3) padded n_node, n_edge, n_graph
    real: np.ndarray  # (N, 3) real nodes, edges, graphs
    batches: list  # (plan, b) of the first step of each distinct shape
    ahead: list  # shapes compiled before the first step


def _plan_steps(loader, method, steps: int) -> _Planned:
    shapes, real, first = [], [], {}
    n_node, n_edge = method.n_node, method.n_edge
    epoch, done = 0, 0
    while done < steps:
        plan = loader.plan(epoch)
        if len(plan) == 0:
            raise ConfigError("advise: the training split yields no batch; use more graphs")
        take = min(len(plan), steps - done)
        shapes.append(plan.shapes[:take])
        real.append(np.stack(plan.real_sizes(n_node, n_edge), axis=1)[:take])
        for j in range(take):
            first.setdefault(tuple(int(x) for x in plan.shapes[j]), (plan, j))
        done += take
        epoch += 1
    ahead = [tuple(int(x) for x in s) for s in method.compile_ahead()]
    return _Planned(np.concatenate(shapes), np.concatenate(real), list(first.items()), ahead)


def _assembly_ms(method, store, targets, plan, pad_edges: str, n: int) -> float:
    """Median host assembly + copy to the device per batch, over the first ``n`` batches of an epoch
    assembled in one pass (as a run streams them)."""
    import jax

    from gnn_batching.batching.plan import EpochPlan

    n = max(min(n, len(plan)), 1)
    hi = int(plan.bounds[n])
    groups = plan.groups[:hi] if plan.groups is not None else None
    head = EpochPlan(plan.order[:hi], plan.bounds[: n + 1], plan.shapes[:n], groups=groups)
    times, it = [], iter(method.iterate(store, head, targets, pad_edges))
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        jax.block_until_ready(jax.device_put(batch.arrays))
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _pick(keys: list[tuple], n: int) -> list[int]:
    """Indices of up to ``n`` shapes spread over padded edges (smallest, middle, largest, ...)."""
    order = sorted(range(len(keys)), key=lambda i: (keys[i][1], keys[i][0]))
    if len(order) <= n:
        return order
    return [order[int(np.rint(q))] for q in np.linspace(0, len(order) - 1, n)]


def _sub_plan(plan, b: int):
    from gnn_batching.batching.plan import EpochPlan

    lo, hi = int(plan.bounds[b]), int(plan.bounds[b + 1])
    groups = plan.groups[lo:hi] if plan.groups is not None else None
    return EpochPlan(plan.order[lo:hi], np.array([0, hi - lo]), plan.shapes[b : b + 1], groups=groups)


def advise(cfg: RunConfig, steps: int, methods: list[str] | None = None, n_compile: int = 3, timed_steps: int = 15,
           verbose: bool = True) -> dict:
    """Predict each method's time to train ``steps`` steps of ``cfg`` (its dataset, model, batch
    size and seed) and recommend one.

    Args:
      cfg: the run config (``batching.method`` is replaced by each of ``methods``).
      steps: the run length N.
      methods: methods to compare (default: the study's three, buckets and packed).
      n_compile: shapes compiled and timed per method.
      timed_steps: timed steps per compiled shape.
      verbose: progress lines on stderr.

    Returns:
      ``{"recommendation": {"method", "reason"}, "methods": [row, ...], "ideal": {...}, "setting": {...}}``;
      every row has ``predicted_time_to_train_s`` with ``_low``/``_high``,
      ``predicted_graphs_per_s_incl_compile``, ``expected_shapes``, ``compile_s_per_shape``,
      ``steady_step_ms``, ``fill``, ``edge_fill``, ``fill_ceiling`` (edge fill over the best of
      the study's methods) and ``efficiency_vs_ideal``.
    """
    import dataclasses

    import jax

    from gnn_batching.data import load_dataset
    from gnn_batching.models import make_model
    from gnn_batching.train.layouts import init_graph, steps_for
    from gnn_batching.train.ragged_steps import autobatch_loaders
    from gnn_batching.train.steps import init_state, make_optimizer

    if steps < 1:
        raise ConfigError(f"advise: --steps must be >= 1, got {steps}")
    methods = list(methods or DEFAULT_METHODS)
    ds = load_dataset(cfg.dataset, verbose=verbose)
    store, targets = ds.store, ds.targets()
    tc = cfg.train
    prog = Progress("advise", total=len(methods), enabled=verbose)
    model = make_model(cfg.model, store.n_species)
    points, per_method = [], {}
    first_overhead = None
    for mi, name in enumerate(methods):
        bcfg = dataclasses.replace(cfg.batching, method=name, options={}) if name != cfg.batching.method \
            else cfg.batching
        method, loader, _, _ = autobatch_loaders(bcfg, model, store, targets, ds.splits, seed=tc.seed)
        t_plan = time.perf_counter()
        planned = _plan_steps(loader, method, steps)
        plan_s = time.perf_counter() - t_plan
        example = next(iter(method.iterate(store, _sub_plan(*planned.batches[0][1]), targets, bcfg.pad_edges)))
        state = init_state(model, make_optimizer(tc.lr, tc.decay_steps, tc.decay_rate, tc.staircase),
                           init_graph(method.steps_layout, example.arrays), tc.seed)

        def one(step_fn, sub, state=state, method=method, bcfg=bcfg):
            t0 = time.perf_counter()
            batch = next(iter(method.iterate(store, sub, targets, bcfg.pad_edges)))
            arrays = jax.device_put(batch.arrays)
            t1 = time.perf_counter()
            jax.block_until_ready(step_fn(state, arrays))
            return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3, batch

        if first_overhead is None:  # a fresh process's first compile is slower (JAX warms up): paid once per run
            warm_step, _ = steps_for(method.steps_layout, model, ds.stats)
            a_ms, u_ms, _ = one(warm_step, _sub_plan(*planned.batches[0][1]))
            first_overhead = (a_ms + u_ms) / 1e3
        train_step, _ = steps_for(method.steps_layout, model, ds.stats)  # a fresh jit: every shape compiles again
        assembly_ms = _assembly_ms(method, store, targets, loader.plan(0), bcfg.pad_edges, timed_steps)
        chosen = _pick([k for k, _ in planned.batches], n_compile)
        compiles, rows = [], []
        for i in chosen:
            key, (plan, b) = planned.batches[i]
            sub = _sub_plan(plan, b)
            a_ms, u_ms, batch = one(train_step, sub)
            for _ in range(2):  # untimed: the first executions after a compile allocate
                one(train_step, sub)
            times = [one(train_step, sub)[1] for _ in range(timed_steps)]
            update = np.array(times)
            steady = float(np.median(update)) + assembly_ms
            compiles.append(max((a_ms + u_ms - steady) / 1e3, 0.0))
            padded = batch.padded if batch.padded is not None else key
            rows.append({"shape": key, "padded": padded, "ms": steady,
                         "q10": float(np.percentile(update, 10)) + assembly_ms,
                         "q90": float(np.percentile(update, 90)) + assembly_ms, "assembly_ms": assembly_ms})
            if mi == 0 and i == chosen[0]:
                first_overhead -= compiles[-1] + steady / 1e3  # the warm-up's excess over a later compile
        points += [(r["padded"], r["ms"]) for r in rows]
        per_method[name] = {"method": method, "planned": planned, "rows": rows, "compiles": compiles,
                            "plan_s": plan_s}
        prog.update(mi + 1, postfix=name)
    prog.close()
    first_overhead = max(first_overhead or 0.0, 0.0)
    coef = _fit(points)
    out_rows = []
    for name in methods:
        m = per_method[name]
        planned, rows = m["planned"], m["rows"]
        calib = float(np.mean([r["ms"] / max(_predict(coef, r["padded"]), 1e-9) for r in rows]))
        measured = {r["shape"]: r for r in rows}
        step_ms = np.array([measured[tuple(s)]["ms"] if tuple(s) in measured else calib * _predict(coef, s)
                            for s in planned.shapes.tolist()])
        lo_f = float(np.mean([r["q10"] / r["ms"] for r in rows]))
        hi_f = float(np.mean([r["q90"] / r["ms"] for r in rows]))
        distinct = {tuple(s) for s in planned.shapes.tolist()} | set(planned.ahead)
        n_shapes = len(distinct)
        c = np.asarray(m["compiles"])
        steady_s = float(step_ms.sum() / 1e3)
        t = steady_s + n_shapes * float(c.mean()) + first_overhead
        graphs = float(planned.real[:, 2].sum())
        out_rows.append({
            "method": name, "steps": steps, "expected_shapes": n_shapes, "compiled_ahead": len(planned.ahead),
            "compile_s_per_shape": float(c.mean()), "compile_s_min": float(c.min()), "compile_s_max": float(c.max()),
            "shapes_timed": len(rows), "steady_step_ms": float(step_ms.mean()),
            "assembly_ms": float(np.mean([r["assembly_ms"] for r in rows])),
            "fill": float(planned.real[:, 0].sum() / planned.shapes[:, 0].sum()),
            "edge_fill": float(planned.real[:, 1].sum() / max(planned.shapes[:, 1].sum(), 1)),
            "graphs": int(graphs), "real_graphs_per_step": graphs / steps,
            "predicted_time_to_train_s": t,
            "predicted_time_to_train_s_low": steady_s * lo_f + n_shapes * float(c.min()) + first_overhead,
            "predicted_time_to_train_s_high": steady_s * hi_f + n_shapes * float(c.max()) + first_overhead,
            "predicted_graphs_per_s_incl_compile": graphs / t,
            "predicted_graphs_per_s_steady": graphs / steady_s,
            "plan_s": m["plan_s"],
        })
    ideal = _ideal(per_method[methods[0]]["method"], cfg, ds, steps, coef)
    for r in out_rows:
        r["efficiency_vs_ideal"] = r["predicted_graphs_per_s_incl_compile"] / ideal["graphs_per_s"]
    _fill_ceilings(out_rows)
    out_rows.sort(key=lambda r: r["predicted_time_to_train_s"])
    return {"recommendation": _recommend(out_rows, steps), "methods": out_rows, "ideal": ideal,
            "setting": {"dataset": cfg.dataset.name, "limit": cfg.dataset.limit, "model": cfg.model.name,
                        "batch_size": int(cfg.batching.batch_size), "steps": steps, "seed": tc.seed,
                        "first_compile_overhead_s": first_overhead, "fit_ms": coef.tolist(),
                        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind}}


def check_advice(cfg: RunConfig, result: dict, out_dir: str, verbose: bool = True) -> list[dict]:
    """Run each advised method for the predicted number of steps with ``gnn-batching run`` (a fresh
    process each, one after the other, evaluation only at the end) and set what it measured beside
    the prediction.

    Returns:
      One row per method: ``predicted_time_to_train_s``, ``measured_train_wall_s`` (the run's
      ``train_wall_s``: steps incl. compiling ones + shapes compiled ahead), their ratio, the
      measured compiles and whether the measurement fell inside the predicted interval.
    """
    import json
    import os
    import subprocess
    import sys

    import yaml

    steps = int(result["setting"]["steps"])
    rows = []
    prog = Progress("advise --check", total=len(result["methods"]), enabled=verbose)
    for i, r in enumerate(result["methods"]):
        data = cfg.to_dict()
        data["batching"] = {**data["batching"], "method": r["method"], "options": {}}
        data["train"] = {**data["train"], "num_train_steps": steps, "eval_every": 0}
        data["name"] = f"advise-{r['method']}"
        run_dir = os.path.join(out_dir, r["method"])
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"{r['method']}.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh, sort_keys=False)
        proc = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", path, "--out", run_dir, "--force"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ConfigError(f"advise --check: the {r['method']} run failed ({path}):\n{proc.stderr[-2000:]}")
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as fh:
            s = json.load(fh)
        measured = float(s["train_wall_s"])
        rows.append({"method": r["method"], "steps": steps, "predicted_time_to_train_s": r["predicted_time_to_train_s"],
                     "predicted_low": r["predicted_time_to_train_s_low"],
                     "predicted_high": r["predicted_time_to_train_s_high"],
                     "measured_train_wall_s": measured, "ratio": r["predicted_time_to_train_s"] / measured,
                     "inside_interval": r["predicted_time_to_train_s_low"] <= measured
                     <= r["predicted_time_to_train_s_high"],
                     "expected_shapes": r["expected_shapes"],
                     "measured_compiles": int(s["train_step_compiles"]),
                     "predicted_graphs_per_s_incl_compile": r["predicted_graphs_per_s_incl_compile"],
                     "measured_graphs_per_s_incl_compile": float(s["graphs_per_s_incl_compile"]),
                     "run_dir": run_dir})
        prog.update(i + 1, postfix=r["method"])
    prog.close()
    return rows


def format_check(rows: list[dict]) -> str:
    """Prediction beside measurement as text."""
    head = ["method", "predicted s", "interval s", "measured s", "predicted / measured", "shapes planned / compiled"]
    body = [[r["method"], f"{r['predicted_time_to_train_s']:.1f}",
             f"{r['predicted_low']:.1f}-{r['predicted_high']:.1f}", f"{r['measured_train_wall_s']:.1f}",
             f"{r['ratio']:.2f}", f"{r['expected_shapes']} / {r['measured_compiles']}"] for r in rows]
    return ("checked: each method run for real (`gnn-batching run`, a fresh process each, one after the other); "
            "measured = the run's train_wall_s\n" + text_table(head, body))


def _features(shape) -> np.ndarray:
    return np.array([1.0, float(shape[0]), float(shape[1])])


def _fit(points: list) -> np.ndarray:
    """Least squares ``ms = a + b * padded nodes + c * padded edges`` (non-negative slopes; with
    too few distinct shapes, a constant plus what the points can tell)."""
    x = np.stack([_features(s) for s, _ in points])
    y = np.array([ms for _, ms in points])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    if (coef[1:] < 0).any():  # a negative slope is noise: fit edges alone
        c, *_ = np.linalg.lstsq(x[:, [0, 2]], y, rcond=None)
        coef = np.array([c[0], 0.0, max(c[1], 0.0)])
    return coef


def _predict(coef: np.ndarray, shape) -> float:
    return float(max(_features(shape) @ coef, 1e-6))


def _ideal(method, cfg: RunConfig, ds, steps: int, coef: np.ndarray) -> dict:
    """The padding-free ideal: seeded epochs cut into ``batch_size - 1`` graphs, each padded to
    exactly its own size, timed by the fitted model, compilation excluded."""
    per = int(cfg.batching.batch_size) - 1
    n_node, n_edge = method.n_node, method.n_edge
    total_ms, graphs, epoch, done = 0.0, 0, 0, 0
    train = np.asarray(ds.splits.train)
    while done < steps:
        order = np.random.default_rng([cfg.train.seed, epoch]).permutation(train)
        starts = np.arange(0, len(order), per)
        take = starts[: steps - done]
        sn = np.add.reduceat(n_node[order], starts)[: len(take)]
        se = np.add.reduceat(n_edge[order], starts)[: len(take)]
        g = np.minimum(per, len(order) - take)
        total_ms += float(np.sum(coef[0] + coef[1] * (sn + 1) + coef[2] * se))
        graphs += int(g.sum())
        done += len(take)
        epoch += 1
    return {"graphs_per_s": graphs / (total_ms / 1e3), "time_to_train_s": total_ms / 1e3, "graphs": graphs,
            "rule": "the same seeded epochs in batches of batch_size - 1 graphs, each padded to exactly its size, "
                    "timed by the fitted step model, compilation excluded"}


def _recommend(rows: list[dict], steps: int) -> dict:
    best = rows[0]
    reason = (f"shortest predicted time to train {steps} steps including compilation: "
              f"{best['predicted_time_to_train_s']:.1f} s ({best['expected_shapes']} compiled shape(s) x "
              f"{best['compile_s_per_shape']:.2f} s, steady {best['steady_step_ms']:.2f} ms/step, node fill "
              f"{best['fill']:.2f})")
    if len(rows) > 1:
        second = rows[1]
        ratio = second["predicted_time_to_train_s"] / best["predicted_time_to_train_s"]
        reason += f"; {ratio:.2f}x faster than {second['method']} ({second['predicted_time_to_train_s']:.1f} s)"
        if second["predicted_time_to_train_s_low"] <= best["predicted_time_to_train_s_high"]:
            reason += ", within the two predictions' intervals: either will do"
    return {"method": best["method"], "reason": reason}


VS_IDEAL_NOTES = {
    "*": "predicted above the padding-free ideal, which no batching can beat by padding less: within the step "
         "model's error (the ideal is timed by the plain fit, each method by its own calibrated timings); read as "
         "~100%.",
    "+": "above the ideal because this method trains more graphs per step than the ideal's batch_size - 1 (each "
         "step's fixed cost is shared by more graphs): the ideal is no ceiling for it.",
}


def _vs_ideal(r: dict, ideal: dict, steps: int) -> str:
    """A method's predicted efficiency against the ideal; above 100 % only with its reason."""
    eff = r["efficiency_vs_ideal"]
    if not eff > 1.0:
        return bounded_percent(eff)
    if r["real_graphs_per_step"] > ideal["graphs"] / steps * (1 + 1e-9):
        return f"{eff:.0%}+"
    return bounded_percent(eff, word="predicted")


def _fill_ceilings(rows: list[dict]) -> None:
    """Each row's ``fill_ceiling``: its planned edge fill over the best edge fill of the study's
    methods among the rows (NaN without one): what removing padding alone can buy over them."""
    from gnn_batching.batching.registry import methods_of

    study = [r["edge_fill"] for r in rows if r["method"] in methods_of("study") and r.get("edge_fill", 0) > 0]
    for r in rows:
        r["fill_ceiling"] = r.get("edge_fill", float("nan")) / max(study) if study else float("nan")


def format_advice(result: dict) -> str:
    """The ranked table, the ideal and the recommendation as text."""
    head = ["method", "time to train s", "interval s", "graphs/s incl. compile", "shapes", "compile s/shape",
            "steady ms/step", "node fill", "edge fill (ceiling)", "vs ideal"]
    body = [[r["method"], f"{r['predicted_time_to_train_s']:.1f}",
             f"{r['predicted_time_to_train_s_low']:.1f}-{r['predicted_time_to_train_s_high']:.1f}",
             f"{r['predicted_graphs_per_s_incl_compile']:.0f}", str(r["expected_shapes"]),
             f"{r['compile_s_per_shape']:.2f}", f"{r['steady_step_ms']:.2f}", f"{r['fill']:.2f}",
             f"{r['edge_fill']:.2f}" + (f" ({r['fill_ceiling']:.2f}x)" if np.isfinite(r.get("fill_ceiling", np.nan))
                                        else ""),
             _vs_ideal(r, result["ideal"], result["setting"]["steps"])] for r in result["methods"]]
    s, ideal, rec = result["setting"], result["ideal"], result["recommendation"]
    marks = "".join(row[-1][-1] for row in body if row[-1][-1] in VS_IDEAL_NOTES)
    return (f"{s['dataset']} ({s['limit'] or 'all'} graphs), {s['model']}, batch size {s['batch_size']}, "
            f"{s['steps']} steps, seed {s['seed']}, on {s['device_kind']} ({s['backend']}); predicted, fastest first:\n"
            + text_table(head, body)
            + f"\npadding-free ideal: {ideal['graphs_per_s']:.0f} graphs/s ({ideal['rule']}); vs ideal = a method's "
              "graphs/s incl. compile / the ideal's; ceiling = a method's planned edge fill / the best of the "
              "study's methods' (what removing padding alone can buy over them).\nshapes: distinct padded shapes "
              "the run will compile (planned "
              "exactly); time to train = the run's train_wall_s (steps incl. compiling ones + shapes compiled "
              "ahead), evaluation excluded."
            + "".join(f"\n{m} {VS_IDEAL_NOTES[m]}" for m in VS_IDEAL_NOTES if m in marks)
            + f"\n\nrecommendation: {rec['method']}: {rec['reason']}")


def advise_config(spec, model: str, batch_size: int, overrides: list[str] | None = None) -> RunConfig:
    """The run config ``advise`` predicts: a dataset spec, a model name, a batch size, and dotted
    ``--set`` overrides of the model, batching and train sections."""
    from gnn_batching.config import apply_overrides, blame, check_override_key, config_from_dict, parse_override

    data: dict = {"name": "advise", "dataset": RunConfig(dataset=spec).to_dict()["dataset"], "model": {"name": model},
                  "batching": {"batch_size": batch_size}}
    for o in overrides or []:
        check_override_key(parse_override(o)[0])
    try:
        return config_from_dict(apply_overrides(data, overrides or []), "advise")
    except ConfigError as exc:  # a value given with --set is named as such
        raise ConfigError(blame(str(exc), "advise", overrides or [])) from None
