"""One instrumented training run: config -> run directory with every measurement.

``train_and_evaluate(cfg, workdir) -> (state, summary)`` is the entry point (Flax-style); the
pieces it composes live in their own files: instruments (compile monitor, phase timer),
records (rows written as they come), summary (the summary row), steps (the jitted steps).

Run directory contents (all written atomically; ``summary.json`` is written LAST, so its
presence means the run finished):

* ``config.yaml``      the resolved config
* ``provenance.json``  git commit, package versions, JAX backend/device, CPU, cores
* ``data.json``        facts derived from the data: split sizes, target stats, budget, method
* ``steps.csv``        one row per step: timings, compile flags, real and padded sizes, loss
* ``evals.csv``        one row per (step, split): RMSE, MAE (physical units), graphs evaluated
* ``epochs.csv``       per-epoch batcher statistics (batches, graphs, shapes, fill, planning ms)
* ``precompile.csv``   shapes compiled ahead of time (methods with a menu) and their seconds
* ``status.json``      ``complete``, or ``interrupted`` / ``failed`` with the reason and steps done
                       (the records above are kept for a run that stopped early)
* ``params.msgpack``   the final parameters (``flax.serialization.to_bytes``)
* ``summary.json``     the flat summary row
* ``checkpoints/``     orbax checkpoints (``train.checkpoint_every`` / ``checkpoint_minutes``),
                       from which ``run --resume`` continues (``checkpoint.py``)
* ``tensorboard/``     TensorBoard event files (``train.tensorboard: true``)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from types import SimpleNamespace

import flax.linen as nn
import flax.serialization
import jax
import numpy as np
import yaml

from gnn_batching.batching.assemble import Batch
from gnn_batching.batching.loader import Loader, make_loaders
from gnn_batching.batching.methods import BatchingMethod
from gnn_batching.batching.shard import Shard
from gnn_batching.config import RunConfig, config_changes, read_yaml
from gnn_batching.data import Dataset, load_dataset
from gnn_batching.data.store import has_repeated_pairs
from gnn_batching.errors import ConfigError, UserError
from gnn_batching.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from gnn_batching.models import make_model
from gnn_batching.progress import Progress
from gnn_batching.train.checkpoint import Checkpoints, has_checkpoint
from gnn_batching.train.instruments import CompileMonitor, PhaseTimer, compilation_cache, peak_device_memory, timer
from gnn_batching.train.layouts import init_graph, steps_for
from gnn_batching.train.parallel import batch_sharding, first_local, put_global, replicate, setup
from gnn_batching.train.precompile import precompile
from gnn_batching.train.provenance import provenance
from gnn_batching.train.records import RunRecords
from gnn_batching.train.steps import TrainState, count_params, init_state, make_optimizer
from gnn_batching.train.summary import build_summary
from gnn_batching.train.tensorboard import TensorBoard

RUN_FILES = ("config.yaml", "provenance.json", "data.json", "steps.csv", "evals.csv", "epochs.csv", "precompile.csv",
             "status.json", "params.msgpack", "summary.json", "checkpoints", "tensorboard")


def safe_name(name: str) -> str:
    """A run name usable as ONE path component: ``../../x`` stays inside ``results/runs``."""
    slug = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)
    while ".." in slug:
        slug = slug.replace("..", "_")
    slug = slug.strip(".")
    return slug or "run"


def default_run_dir(cfg: RunConfig) -> str:
    """``results/runs/<name>-<timestamp>``: where a run goes unless told otherwise."""
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


log = logging.getLogger(__name__)


def to_device(batch: Batch, sharding=None) -> Batch:
    """Copy a batch's arrays to the default device, or over the mesh of a data-parallel run
    (``sharding``: the stacked device axis split over devices). Run in the prefetch thread, so
    the update times the device step alone; the copy's time is kept in ``transfer_ms``."""
    t0 = timer()
    placed = jax.device_put(batch.arrays) if sharding is None else put_global(batch.arrays, sharding)
    arrays = jax.block_until_ready(placed)
    return dataclasses.replace(batch, arrays=arrays, transfer_ms=(timer() - t0) * 1e3)


def evaluate(eval_step, state, loader, monitor: CompileMonitor, place=None) -> dict:
    """One ordered pass over a split: every graph exactly once, final partial batch included.

    ``place`` puts a batch's arrays where the step expects them (over the mesh of a
    data-parallel run); the counts then come from every host's devices.
    """
    sse = sae = 0.0
    n = 0.0
    graphs = 0
    for batch in loader.epoch(0):
        with monitor.track("eval", eval_step):
            out = eval_step(state, place(batch.arrays) if place else batch.arrays)
            out = jax.device_get(out)
        sse += float(out["sse"])
        sae += float(out["sae"])
        n += float(out["n"])
        graphs += batch.n_real_graphs
    one_host = loader.shard is None or loader.shard.n_processes == 1
    if round(n) != len(loader.index) or (one_host and graphs != round(n)):  # evaluation never skips
        raise RuntimeError(f"evaluation covered {round(n)} graphs of {len(loader.index)}")
    graphs = round(n)
    if graphs == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "graphs": 0}
    return {"rmse": math.sqrt(sse / n), "mae": sae / n, "graphs": graphs}


def _compile_ahead(p: Prepared, cfg: RunConfig, monitor: CompileMonitor, train_step, eval_step, state,
                   example, sharding=None) -> list[dict]:
    """Compile the shapes the methods name ahead of time (none for the study's methods)."""
    rows = precompile(monitor, "train", train_step, state, example, p.method.compile_ahead(), sharding)
    eval_shapes: list = []
    for split in cfg.train.eval_splits:
        eval_shapes += [s for s in p.eval_loaders[split].method.compile_ahead() if s not in eval_shapes]
    return rows + precompile(monitor, "eval", eval_step, state, example, eval_shapes, sharding)


class _Interrupted(Exception):
    """Raised in the main thread on SIGTERM, so the run keeps its records on the way out."""


class _StopRequest:
    """Set by the first SIGTERM; the run loop stops at the end of the step it is in."""

    signum: int | None = None

    def check(self) -> None:
        """Raise :class:`_Interrupted` if a stop was requested."""
        if self.signum is not None:
            raise _Interrupted(f"signal {self.signum}")


@contextlib.contextmanager
def _sigterm_as_exception(stop: _StopRequest):
    """SIGTERM stops the run at the end of the current step (records, state and checkpoint then
    agree); a second SIGTERM stops it at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.signum is not None:
            raise _Interrupted(f"signal {signum} (twice)")
        stop.signum = signum

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclasses.dataclass
class Prepared:
    """Everything a run needs, built and validated before anything is written."""

    ds: Dataset
    method: BatchingMethod
    train_loader: Loader
    eval_loaders: dict[str, Loader]
    model: nn.Module


def prepare(cfg: RunConfig, verbose: bool = True, shard: Shard | None = None) -> Prepared:
    """Load the data, split it, build the batchers and the model: every check that bad input
    can fail happens here, before a run directory exists. ``shard``: the devices and hosts of a
    data-parallel run (the loaders then yield one stacked batch per step).

    Raises:
        ConfigError: an empty evaluated split, an impossible budget, an unknown name.
        DataError: a source that cannot be read.
    """
    ds = load_dataset(cfg.dataset, verbose=verbose)
    for split in cfg.train.eval_splits:  # an empty split would report a meaningless error
        if len(ds.splits.get(split)) == 0:
            raise ConfigError(f"dataset.split: the {split} split of {len(ds.store)} graphs is empty, but "
                              f"train.eval_splits evaluates it; use more graphs or a larger share")
    if cfg.train.tensorboard:
        TensorBoard.check_available()
    if cfg.model.form == "dense" and has_repeated_pairs(ds.store):
        raise ConfigError(f"model.form: dense cannot hold the {cfg.dataset.name} graphs: some repeat a "
                          "(sender, receiver) pair (periodic images); use model.form: sparse")
    method, train_loader, eval_loaders = make_loaders(cfg.batching, ds.store, ds.targets(), ds.splits,
                                                      seed=cfg.train.seed, shard=shard)
    return Prepared(ds, method, train_loader, eval_loaders, make_model(cfg.model, ds.store.n_species))


def _write_header(out: str, cfg: RunConfig, p: Prepared, prov: dict) -> None:
    """config.yaml, provenance.json and data.json (facts derived from the data)."""
    os.makedirs(out, exist_ok=True)
    write_text_atomic(os.path.join(out, "config.yaml"), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_json_atomic(os.path.join(out, "provenance.json"), prov)
    ds = p.ds
    write_json_atomic(os.path.join(out, "data.json"), {
        "dataset": cfg.dataset.name, "synthetic": ds.synthetic, "target": ds.target, "unit": ds.unit,
        "n_graphs": len(ds.store), "n_train": len(ds.splits.train), "n_val": len(ds.splits.val),
        "n_test": len(ds.splits.test), "train_mean": ds.stats.mean, "train_std": ds.stats.std,
        "n_species": ds.store.n_species, "species_z": ds.store.species_z.tolist(),
        "skipped_entries": len(ds.store.skipped), "batching": p.method.describe(),
        "eval_batching": p.eval_loaders["test"].method.describe(),
    })


# settings a resumed run may change: they decide how long it runs and what it saves, not which
# batches it sees or how it learns
RESUMABLE_CHANGES = ("train.num_train_steps", "train.checkpoint_every", "train.checkpoint_minutes",
                     "train.checkpoint_keep", "train.tensorboard", "batching.prefetch")


def check_resumable(out: str, cfg: RunConfig) -> None:
    """Refuse to resume a run directory with settings other than those its run was started with.

    Raises:
      UserError: naming the run directory and the changed keys.
    """
    saved = os.path.join(out, "config.yaml")
    if not os.path.exists(saved):
        return
    changed = config_changes(read_yaml(saved), cfg.to_dict(), saved, ignore=RESUMABLE_CHANGES)
    if changed:
        raise UserError(f"{out}: was started with different settings ({'; '.join(changed[:4])}); --resume "
                        f"continues a run with the settings it had (only {', '.join(RESUMABLE_CHANGES)} may "
                        "change); choose another --out for the new settings")


def _compile_totals(first: dict):
    """What the summary reads from a compile monitor, from the compile counts of the first start."""
    return SimpleNamespace(counts=first["counts"], seconds=first["seconds"], cache_hits=first["cache_hits"])


def train_and_evaluate(cfg: RunConfig, workdir: str | None = None, verbose: bool = True,
                       force: bool = False, resume: bool = False) -> tuple[TrainState, dict]:
    """Train and evaluate one configuration, recording everything in ``workdir``.

    Everything that can fail on bad input is checked BEFORE ``workdir`` is created or written
    (:func:`prepare`). An interrupted or failed run keeps its per-step records and says so in
    ``status.json`` (no ``summary.json``: it is not a finished run).

    Args:
        cfg: a validated run config (:func:`gnn_batching.load_config`).
        workdir: the run directory (default ``results/runs/<name>-<time>``).
        verbose: log progress on the ``gnn_batching`` logger (INFO; the CLI shows it on stderr).
        force: redo a partial run found in ``workdir`` (never a finished one).
        resume: continue a partial run in ``workdir`` from its latest checkpoint (from step 0
          when it has none): the remaining steps see exactly the batches an uninterrupted run
          would have seen; ``summary.json`` counts ``restarts`` and the compiles after them apart.

    Returns:
        The trained Flax ``TrainState`` and the summary (also in ``summary.json``); the final
        parameters are saved in ``params.msgpack`` (``flax.serialization``).

    Raises:
        UserError: bad config or data, an unusable ``workdir``, or a loss that became NaN.
    """
    out = workdir or default_run_dir(cfg)
    ckpt_root = out  # every process saves and restores the same checkpoints (orbax coordinates them)
    shard, mesh = setup(cfg.train.devices)
    if jax.process_index() != 0:  # one run directory, written by process 0; the others keep theirs apart
        out = tempfile.mkdtemp(prefix=f"gnn-batching-process{jax.process_index()}-")
        log.info(f"process {jax.process_index()}: records in {out}")
    check_out_dir(out, force or resume)
    if resume:
        check_resumable(out, cfg)
    t_start = time.perf_counter()
    p = prepare(cfg, verbose, shard)
    prov = provenance()
    _write_header(out, cfg, p, prov)

    tc = cfg.train
    tx = make_optimizer(tc.lr, tc.decay_steps, tc.decay_rate, tc.staircase)
    train_step, eval_step = steps_for(p.method.layout, p.model, p.ds.stats, mesh)
    sharding = batch_sharding(mesh) if mesh is not None else None
    # where a step's arrays go when the prefetch thread did not put them there already
    place = functools.partial(put_global, sharding=sharding) if sharding is not None else None
    step_place = place if cfg.batching.prefetch <= 0 else None
    monitor = CompileMonitor()
    ckpt = Checkpoints(ckpt_root, tc.checkpoint_every, tc.checkpoint_minutes, tc.checkpoint_keep)
    start = (ckpt.latest() or 0) if resume else 0
    if resume:
        log.info(f"resuming {out} from step {start}" if start else f"{out}: no checkpoint; starting from step 0")
    elif has_checkpoint(ckpt_root):  # a partial run redone from scratch: its checkpoints are stale
        shutil.rmtree(ckpt.directory)
    stream = p.train_loader.stream(cfg.batching.prefetch, transform=functools.partial(to_device, sharding=sharding),
                                   start=start)
    board = TensorBoard(os.path.join(out, "tensorboard")) if tc.tensorboard else None
    compiles = {"first": None, "restarts": {"count": 0, "seconds": 0.0}}
    restarts = 0
    records = RunRecords(out, p.train_loader.epoch_stats)
    prog = Progress(f"run {cfg.name}", total=tc.num_train_steps, enabled=verbose)
    state: TrainState | None = None
    init_s = 0.0
    graphs_seen = 0
    train_wall_s = 0.0
    status = {"status": "running"}
    stop = _StopRequest()

    def compile_counts() -> dict:  # counts before the first restart, and all compiles after restarts apart
        if restarts == 0:
            return {"first": {"counts": dict(monitor.counts), "seconds": dict(monitor.seconds),
                              "cache_hits": dict(monitor.cache_hits)}, "restarts": compiles["restarts"]}
        return {"first": compiles["first"],
                "restarts": {"count": compiles["restarts"]["count"] + sum(monitor.counts.values()),
                             "seconds": compiles["restarts"]["seconds"] + sum(monitor.seconds.values())}}

    def save_checkpoint(steps_done: int) -> None:
        ckpt.save(steps_done, state, {"steps_done": steps_done, "graphs_seen": graphs_seen,
                                      "train_wall_s": train_wall_s, "restarts": restarts, "init_s": init_s,
                                      "records": records.snapshot(), "compiles": compile_counts()})

    try:
        with _sigterm_as_exception(stop), compilation_cache(tc.compilation_cache):
            for step in range(start, tc.num_train_steps):
                phase = PhaseTimer()
                with phase("assembly"):
                    batch = next(stream)
                if state is None:  # init outside the timed phases (uses the first batch's shapes)
                    with phase("init"):
                        one = batch.arrays if mesh is None else first_local(batch.arrays)
                        state = init_state(p.model, tx, init_graph(p.method.layout, one), tc.seed)
                        if mesh is not None:
                            state = replicate(state, mesh)
                    init_s = phase.s["init"]
                    if start:  # the template's structure and placement, the checkpoint's values
                        state, meta = ckpt.restore(state)
                        records.restore(meta["records"])
                        graphs_seen, train_wall_s = int(meta["graphs_seen"]), float(meta["train_wall_s"])
                        restarts, init_s = int(meta["restarts"]) + 1, float(meta["init_s"])
                        compiles = meta["compiles"]
                    ahead = _compile_ahead(p, cfg, monitor, train_step, eval_step, state, batch.arrays, sharding)
                    if not start:  # compiled again after a restart: counted apart (restart_compiles)
                        records.precompiled(ahead)
                    train_wall_s += sum(r["compile_s"] for r in ahead if r["label"] == "train")
                with phase("update"), monitor.track("train", train_step) as info:
                    state, metrics = train_step(state, step_place(batch.arrays) if step_place else batch.arrays)
                    jax.block_until_ready((state, metrics))
                loss = float(metrics["loss"])
                graphs_seen += batch.n_real_graphs
                step_ms = phase.ms("assembly") + phase.ms("update")
                train_wall_s += phase.s["assembly"] + phase.s["update"]
                n_node, n_edge, n_graph = batch.shape
                records.step(step=step, assembly_ms=phase.ms("assembly"), update_ms=phase.ms("update"),
                             combined_ms=step_ms, compiled=info["compiled"],
                             compile_s=info["compile_s"],
                             wait_ms=getattr(stream, "last_wait_s", float("nan")) * 1e3,
                             transfer_ms=batch.transfer_ms, real_graphs=batch.n_real_graphs,
                             real_nodes=batch.n_real_nodes, real_edges=batch.n_real_edges, n_node=n_node,
                             n_edge=n_edge, n_graph=n_graph, loss=loss, graphs_seen=graphs_seen)
                if board is not None:
                    board.step(step, loss, step_ms, graphs_seen)
                if not np.isfinite(loss):
                    raise UserError(f"{cfg.name}: loss became {loss} at step {step}; lower train.lr? "
                                    f"(records so far kept in {out})")
                if step == tc.num_train_steps - 1 or (tc.eval_every and (step + 1) % tc.eval_every == 0):
                    for split in tc.eval_splits:
                        r = evaluate(eval_step, state, p.eval_loaders[split], monitor, place)
                        records.evaluation({"step": step + 1, "split": split, "graphs_seen": graphs_seen,
                                            "train_wall_s": train_wall_s, **r})
                        if board is not None:
                            board.evaluation(step + 1, split, r)
                prog.update(step + 1, postfix=f"loss {loss:.4f}, {step_ms:.1f} ms/step")
                if step + 1 < tc.num_train_steps and ckpt.enabled and ckpt.due(step + 1):
                    save_checkpoint(step + 1)
                stop.check()
        status = {"status": "complete"}
    except BaseException as exc:
        kind = "interrupted" if isinstance(exc, (KeyboardInterrupt, _Interrupted)) else "failed"
        status = {"status": kind, "reason": f"{type(exc).__name__}: {exc}", "steps_done": len(records)}
        # a preempted job (SIGTERM) keeps its progress; --resume continues from here. The state's own
        # step counter says how many updates it holds; saved only when the records hold as many (a
        # second SIGTERM between an update and its record leaves the previous checkpoint in charge)
        done = int(state.step) if state is not None else 0
        if kind == "interrupted" and ckpt.enabled and done > start and done == len(records):
            try:
                save_checkpoint(done)
                status["checkpoint"] = done
            except Exception as save_exc:
                status["checkpoint_error"] = f"{type(save_exc).__name__}: {save_exc}"
        raise
    finally:
        prog.close()
        if hasattr(stream, "close"):
            stream.close()
        monitor.close()
        ckpt.close()
        if board is not None:
            board.close()
        records.save()
        if status["status"] != "complete":
            records.status(status)

    write_bytes_atomic(os.path.join(out, "params.msgpack"), flax.serialization.to_bytes(state.params))
    totals = compile_counts()
    summary = build_summary(cfg, p.ds, *records.frames(), _compile_totals(totals["first"]),
                            count_params(state.params), prov, precompile_df=records.precompile_frame())
    summary.update({"restarts": restarts, "restart_compiles": int(totals["restarts"]["count"]),
                    "restart_compile_s": float(totals["restarts"]["seconds"]), "checkpoints_saved": ckpt.saved,
                    "checkpoint_s": ckpt.seconds})
    summary["init_s"] = init_s
    summary["peak_device_memory_bytes"] = peak_device_memory()
    summary["wall_s"] = time.perf_counter() - t_start
    summary["concurrent_jobs"] = int(os.environ.get("GNN_BATCHING_JOBS", "1"))
    n_local = shard.n_local if shard else 1
    summary.update({"n_devices": shard.n_global if shard else 1, "n_local_devices": n_local,
                    "n_processes": shard.n_processes if shard else 1,
                    # this host's graphs over this host's devices (hosts step in lockstep)
                    "graphs_per_s_per_device": summary["graphs_per_s"] / n_local})
    summary["run_dir"] = os.path.abspath(out)
    records.status(status)
    write_json_atomic(os.path.join(out, "summary.json"), summary)
    return state, summary


def run(cfg: RunConfig, out_dir: str | None = None, verbose: bool = True, force: bool = False,
        resume: bool = False) -> dict:
    """:func:`train_and_evaluate`, returning the summary only (what the command line prints)."""
    return train_and_evaluate(cfg, out_dir, verbose=verbose, force=force, resume=resume)[1]
