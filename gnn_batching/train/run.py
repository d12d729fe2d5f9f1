"""One instrumented training run: config -> run directory with every measurement.

``train_and_evaluate(cfg, workdir) -> (state, summary)`` is the entry point (Flax-style); the
pieces it composes live in their own files: instruments (compile monitor, phase timer),
records (rows written as they come), summary (the summary row), steps (the jitted steps).

The loop body: assemble the next batch, run the jitted step, book it (counters, records), then
call the periodic actions (:mod:`~gnn_batching.train.hooks`: evaluate, TensorBoard, progress,
checkpoint, stop on SIGTERM). What the run directory holds: :mod:`gnn_batching.rundir`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import tempfile
import time

import flax.linen as nn
import flax.serialization
import jax
import numpy as np
import yaml

from gnn_batching.batching.assemble import Batch
from gnn_batching.batching.loader import Loader
from gnn_batching.batching.methods import BatchingMethod
from gnn_batching.batching.shard import Shard
from gnn_batching.config import RunConfig, config_changes, read_yaml, resolve_prefetch
from gnn_batching.data import Dataset, load_dataset
from gnn_batching.data.store import has_repeated_pairs
from gnn_batching.errors import ConfigError, UserError
from gnn_batching.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from gnn_batching.models import check_model_output, make_model
from gnn_batching.progress import Progress
from gnn_batching.rundir import (
    CONFIG,
    DATA,
    PARAMS,
    PROVENANCE,
    SUMMARY,
    TENSORBOARD,
    check_out_dir,
    default_run_dir,
    has_checkpoint,
)
from gnn_batching.train.calls import Lookahead, multi_step, next_call, resolve_steps_per_call, stack
from gnn_batching.train.checkpoint import Checkpoints
from gnn_batching.train.counters import RunCounters
from gnn_batching.train.device_probe import DeviceProbe
from gnn_batching.train.device_store import DeviceStore, choose_placement, store_bytes
from gnn_batching.train.hooks import Board, Checkpoint, Evaluate, Hook, Interrupted, ShowProgress, StopOnSignal
from gnn_batching.train.instruments import (
    CompileMonitor,
    PhaseTimer,
    compilation_cache,
    free_dispatch_cache,
    shape_key,
    timer,
)
from gnn_batching.train.layouts import init_graph, steps_for
from gnn_batching.train.loop import Loop
from gnn_batching.train.parallel import batch_sharding, first_local, put_global, replicate, setup
from gnn_batching.train.precompile import precompile
from gnn_batching.train.provenance import provenance
from gnn_batching.train.ragged_steps import autobatch_loaders
from gnn_batching.train.records import RunRecords
from gnn_batching.train.steps import TrainState, count_params, init_state, make_optimizer
from gnn_batching.train.summary import build_summary
from gnn_batching.train.tensorboard import TensorBoard

log = logging.getLogger(__name__)


def to_device(batch: Batch, sharding=None) -> Batch:
    """Copy a batch's arrays to the default device, or over the mesh of a data-parallel run
    (``sharding``: the stacked device axis split over devices). Run in the prefetch thread, so
    the update times the device step alone; the copy's time is kept in ``transfer_ms``."""
    t0 = timer()
    placed = jax.device_put(batch.arrays) if sharding is None else put_global(batch.arrays, sharding)
    arrays = jax.block_until_ready(placed)
    return dataclasses.replace(batch, arrays=arrays, transfer_ms=(timer() - t0) * 1e3)


def _compile_ahead(p: Prepared, cfg: RunConfig, monitor: CompileMonitor, train_step, eval_step, state,
                   example, sharding=None) -> list[dict]:
    """Compile the shapes the methods name ahead of time (none for the study's methods)."""
    rows = precompile(monitor, "train", train_step, state, example, p.method.compile_ahead(), sharding)
    eval_shapes: list = []
    for split in cfg.train.eval_splits:
        eval_shapes += [s for s in p.eval_loaders[split].method.compile_ahead() if s not in eval_shapes]
    return rows + precompile(monitor, "eval", eval_step, state, example, eval_shapes, sharding)


@dataclasses.dataclass
class Prepared:
    """Everything a run needs, built and validated before anything is written."""

    ds: Dataset
    method: BatchingMethod
    train_loader: Loader
    eval_loaders: dict[str, Loader]
    model: nn.Module
    placement: dict = dataclasses.field(default_factory=dict)  # where batches are gathered, and why


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
    model = make_model(cfg.model, ds.store.n_species)
    method, train_loader, eval_loaders, mode = autobatch_loaders(cfg.batching, model, ds.store, ds.targets(),
                                                                 ds.splits, seed=cfg.train.seed, shard=shard)
    where, why = choose_placement(cfg.dataset.placement, store_bytes(ds.store), shard.n_global if shard else 1,
                                  cfg.dataset.device_share)
    placement = {"placement": where, "placement_reason": why, "device_store_bytes": 0, **mode}
    if where == "device":
        dev = DeviceStore(ds.store, ds.targets(), cfg.batching.pad_edges)
        placement["device_store_bytes"] = dev.nbytes
        for loader in (train_loader, *eval_loaders.values()):
            loader.assembler = dev.assembler(loader.method)
    if method.steps_layout == "disjoint-union" and train_loader.shard is None:
        check_model_output(model, train_loader.example().arrays.graph, cfg.model)
    return Prepared(ds, method, train_loader, eval_loaders, model, placement)


def _write_header(out: str, cfg: RunConfig, p: Prepared, prov: dict) -> None:
    """config.yaml, provenance.json and data.json (facts derived from the data)."""
    os.makedirs(out, exist_ok=True)
    write_text_atomic(os.path.join(out, CONFIG), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_json_atomic(os.path.join(out, PROVENANCE), prov)
    ds = p.ds
    write_json_atomic(os.path.join(out, DATA), {
        "dataset": cfg.dataset.name, "synthetic": ds.synthetic, "target": ds.target, "unit": ds.unit,
        "n_graphs": len(ds.store), "n_train": len(ds.splits.train), "n_val": len(ds.splits.val),
        "n_test": len(ds.splits.test), "train_mean": ds.stats.mean, "train_std": ds.stats.std,
        "n_species": ds.store.n_species, "species_z": ds.store.species_z.tolist(),
        "skipped_entries": len(ds.store.skipped), "batching": p.method.describe(),
        "eval_batching": p.eval_loaders["test"].method.describe(),
    })


# settings a resumed run may change: they decide how long it runs, what it saves and where its
# batches are gathered (host or device: bit-identical batches), not which batches it sees or how it learns
RESUMABLE_CHANGES = ("train.num_train_steps", "train.checkpoint_every", "train.checkpoint_minutes",
                     "train.checkpoint_keep", "train.tensorboard", "batching.prefetch", "dataset.placement",
                     "dataset.device_share")


def check_resumable(out: str, cfg: RunConfig) -> None:
    """Refuse to resume a run directory with settings other than those its run was started with.

    Raises:
      UserError: naming the run directory and the changed keys.
    """
    saved = os.path.join(out, CONFIG)
    if not os.path.exists(saved):
        return
    changed = config_changes(read_yaml(saved), cfg.to_dict(), saved, ignore=RESUMABLE_CHANGES)
    if changed:
        raise UserError(f"{out}: was started with different settings ({'; '.join(changed[:4])}); --resume "
                        f"continues a run with the settings it had (only {', '.join(RESUMABLE_CHANGES)} may "
                        "change); choose another --out for the new settings")


def _restore(loop: Loop, out: str) -> int:
    """Continue ``loop`` from the newest readable checkpoint; returns the steps it holds.

    Nothing is written before this succeeds (an unreadable checkpoint falls back to the
    previous one; none readable: :class:`~gnn_batching.train.checkpoint.CheckpointError`).
    """
    def check(step: int, meta: dict) -> None:
        counted = RunCounters.from_dict(meta["counters"]).steps_done
        recorded = len(next(iter(meta["records"]["steps"].values()), []))
        if (counted, recorded) != (step, step):
            raise ValueError(f"its counters hold {counted} steps and its records {recorded}, not {step}")

    t0 = time.perf_counter()
    step, loop.state, meta = loop.ckpt.restore(loop.state, check)
    loop.counters = RunCounters.from_dict(meta["counters"])
    loop.monitor.load(loop.counters.compile)
    loop.records.restore(meta["records"])
    dt = time.perf_counter() - t0
    loop.counters.restarts += 1
    loop.counters.restore_s += dt
    loop.segment = loop.counters.restarts
    log.info(f"resuming {out} from step {step}")
    return step


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
        resume: continue a partial run in ``workdir`` from its newest readable checkpoint (from
            step 0 when it has none): the remaining steps see exactly the batches an uninterrupted
            run would have seen; nothing in ``workdir`` is written before the restore succeeded.
            ``summary.json`` counts ``restarts``, the recompiles they caused and their overhead apart.

    Returns:
        The trained Flax ``TrainState`` and the summary (also in ``summary.json``); the final
        parameters are saved in ``params.msgpack`` (``flax.serialization``).

    Raises:
        UserError: bad config or data, an unusable ``workdir``, a checkpoint past
            ``train.num_train_steps`` or none readable, or a loss that became NaN.
    """
    out = workdir or default_run_dir(cfg.name)
    ckpt_root = out  # every process saves and restores the same checkpoints (orbax coordinates them)
    shard, mesh = setup(cfg.train.devices)
    if jax.process_index() != 0:  # one run directory, written by process 0; the others keep theirs apart
        out = tempfile.mkdtemp(prefix=f"gnn-batching-process{jax.process_index()}-")
        log.info(f"process {jax.process_index()}: records in {out}")
    check_out_dir(out, force or resume)
    if resume:
        check_resumable(out, cfg)
    tc = cfg.train
    ckpt = Checkpoints(ckpt_root, tc.checkpoint_every, tc.checkpoint_minutes, tc.checkpoint_keep)
    newest = ckpt.steps()[:1] if resume else []
    if newest and newest[0] > tc.num_train_steps:
        raise UserError(f"{out}: its newest checkpoint is at step {newest[0]}, past train.num_train_steps="
                        f"{tc.num_train_steps}; resume with train.num_train_steps >= {newest[0]}, or start "
                        "a new run (another --out)")
    t_start = time.perf_counter()
    from gnn_batching import xla_flags

    if xla_flags.status()["scatter_fix"] == "not checked":  # a library call, not the command line
        xla_flags.apply()
    if free_dispatch_cache():  # a long session filled JAX's dispatch cache: steps would dispatch slowly
        log.warning("JAX's dispatch cache was full (jax-ml/jax#39078: every later jitted call would take "
                    "the slow Python path and hide its compile count); emptied it with jax.clear_caches()")
    p = prepare(cfg, verbose, shard)
    prov = provenance()
    tx = make_optimizer(tc.lr, tc.decay_steps, tc.decay_rate, tc.staircase)
    train_step, eval_step = steps_for(p.method.steps_layout, p.model, p.ds.stats, mesh)
    sharding = batch_sharding(mesh) if mesh is not None else None
    # where a step's arrays go when the prefetch thread did not put them there already
    place = functools.partial(put_global, sharding=sharding) if sharding is not None else None
    prefetch = resolve_prefetch(cfg.batching.prefetch, jax.default_backend())
    step_place = place if prefetch <= 0 else None
    t0 = time.perf_counter()  # init outside the timed phases; parameter shapes do not depend on the batch
    example = p.train_loader.example()
    one = example.arrays if mesh is None else first_local(example.arrays)
    state = init_state(p.model, tx, init_graph(p.method.steps_layout, one), tc.seed)
    if mesh is not None:
        state = replicate(state, mesh)
    init_s = time.perf_counter() - t0
    loop = Loop(tc.num_train_steps, state, RunCounters(init_s=init_s), RunRecords(out, p.train_loader.epoch_stats),
                CompileMonitor(), ckpt, eval_step, p.eval_loaders, place, lead=0 if mesh is None else 1)
    loop.extra.update(p.placement)
    start = 0
    try:
        if resume and newest:
            start = _restore(loop, out)
        elif resume:
            log.info(f"{out}: no checkpoint; starting from step 0")
        elif has_checkpoint(ckpt_root):  # a partial run redone from scratch: its checkpoints are stale
            shutil.rmtree(ckpt.directory)
    except BaseException:
        loop.monitor.close()
        ckpt.close()
        raise
    _write_header(out, cfg, p, prov)  # only now: a failed restore leaves the run directory as it was
    stream = p.train_loader.stream(prefetch, transform=functools.partial(to_device, sharding=sharding),
                                   start=start)
    board = TensorBoard(os.path.join(out, TENSORBOARD)) if tc.tensorboard else None
    stop = StopOnSignal()
    hooks: list[Hook] = [Evaluate(tc.eval_every, tc.eval_splits, board), *([Board(board)] if board else []),
                         ShowProgress(Progress(f"run {cfg.name}", total=tc.num_train_steps, enabled=verbose)),
                         Checkpoint(ckpt), stop, DeviceProbe(train_step, tc.device_probe_batches, tc.warmup_steps)]
    # several steps per dispatch where they share a shape (train/calls.py); never past a hook's stop
    per_call = resolve_steps_per_call(tc.steps_per_call, jax.default_backend(), shard.n_global if shard else 1)
    steps_k = multi_step(train_step) if per_call > 1 else None
    source = Lookahead(stream)

    def stops(steps_done: int) -> list[int | None]:
        return [h.next_stop(steps_done) for h in hooks]

    loop.extra["steps_per_call"] = per_call
    status = {"status": "running"}
    try:
        with stop.installed(), compilation_cache(tc.compilation_cache):
            rows = _compile_ahead(p, cfg, loop.monitor, train_step, eval_step, loop.state, example.arrays, sharding)
            for r in rows:
                r["segment"] = loop.segment
            loop.records.precompiled(rows)
            loop.counters.ahead(rows)
            step = start
            while step < tc.num_train_steps:
                phase = PhaseTimer()
                waited = source.waited_s
                with phase("assembly"):
                    group = next_call(source, step, tc.num_train_steps, per_call, stops(step), loop.lead)
                    arrays = group[0].arrays if len(group) == 1 else stack([g.arrays for g in group])
                arrays = step_place(arrays) if step_place else arrays
                fn = train_step if len(group) == 1 else steps_k
                key = shape_key(arrays, loop.lead)
                with phase("update"), loop.monitor.track("train", fn, key) as c:
                    loop.state, metrics = fn(loop.state, arrays)
                    jax.block_until_ready((loop.state, metrics))
                k = len(group)
                losses = np.atleast_1d(np.asarray(metrics["loss"], dtype=np.float64))
                assembly_ms, update_ms = phase.ms("assembly") / k, phase.ms("update") / k
                wait_ms = (source.waited_s - waited) * 1e3 / k
                seen = []
                for j, (batch, loss) in enumerate(zip(group, losses)):
                    # the call's time divided evenly; its compile (and a restart's) booked on its first step
                    restart_s = c["compile_s"] if c["restart"] and j == 0 else 0.0
                    sizes = batch.totals()
                    loop.counters.step(sizes["real_graphs"], (assembly_ms + update_ms) / 1e3, restart_s)
                    loop.records.step(step=step + j, segment=loop.segment, assembly_ms=assembly_ms,
                                      update_ms=update_ms, combined_ms=assembly_ms + update_ms,
                                      compiled=c["compiled"] if j == 0 else 0,
                                      compile_s=c["compile_s"] if j == 0 else 0.0, restart_compile_s=restart_s,
                                      wait_ms=wait_ms, transfer_ms=batch.transfer_ms, **sizes, loss=float(loss),
                                      graphs_seen=loop.counters.graphs_seen, call=step, call_steps=k)
                    seen.append(loop.counters.graphs_seen)
                    if not np.isfinite(loss):
                        raise UserError(f"{cfg.name}: loss became {loss} at step {step + j}; lower train.lr? "
                                        f"(records so far kept in {out})")
                step += k
                # the call's steps (one unless steps_per_call > 1): their losses and graphs seen, in order
                loop.last = {"losses": [float(x) for x in losses], "graphs_seen": seen,
                             "step_ms": assembly_ms + update_ms, "arrays": arrays,
                             "compiled": c["compiled"], "key": key, "fn": fn, "k": k}
                for hook in hooks:
                    hook.after_step(loop, step)
            for hook in hooks:
                hook.finish(loop)
        status = {"status": "complete"}
    except BaseException as exc:
        kind = "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed"
        status = {"status": kind, "reason": f"{type(exc).__name__}: {exc}", "steps_done": len(loop.records)}
        # a preempted job (SIGTERM) keeps its progress; --resume continues from here. The state's own
        # step counter says how many updates it holds; saved only when the records hold as many (a
        # second SIGTERM between an update and its record leaves the previous checkpoint in charge)
        done = int(loop.state.step)
        if kind == "interrupted" and ckpt.enabled and done > start and done == len(loop.records) \
                and done == loop.counters.steps_done:
            try:
                if loop.save_checkpoint():
                    status["checkpoint"] = done
            except Exception as save_exc:
                status["checkpoint_error"] = f"{type(save_exc).__name__}: {save_exc}"
            if "checkpoint" not in status and done in ckpt.steps():
                status["checkpoint"] = done  # saved already at this step (a checkpoint step)
        raise
    finally:
        source.close()
        for hook in hooks:
            hook.close()
        loop.monitor.close()
        ckpt.close()
        loop.records.save()
        if status["status"] != "complete":
            loop.records.status(status)

    write_bytes_atomic(os.path.join(out, PARAMS), flax.serialization.to_bytes(loop.state.params))
    loop.counters.compile = loop.monitor.state()
    summary = build_summary(cfg, p.ds, *loop.records.frames(), loop.counters, count_params(loop.state.params), prov,
                            precompile_df=loop.records.precompile_frame(), shard=shard,
                            wall_s=time.perf_counter() - t_start, run_dir=os.path.abspath(out), extra=loop.extra,
                            method_fields=p.method.summary_fields())
    loop.records.status(status)
    write_json_atomic(os.path.join(out, SUMMARY), summary)
    return loop.state, summary


def run(cfg: RunConfig, out_dir: str | None = None, verbose: bool = True, force: bool = False,
        resume: bool = False) -> dict:
    """:func:`train_and_evaluate`, returning the summary only (what the command line prints)."""
    return train_and_evaluate(cfg, out_dir, verbose=verbose, force=force, resume=resume)[1]
