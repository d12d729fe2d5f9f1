"""Instruments: compile counting, per-step timing records and their honest summary.

* Compilations are counted per jitted function from its own cache size (exact, in-process),
  and compile seconds come from ``jax.monitoring`` duration events (trace + lowering + backend
  compile), attributed to whichever instrumented call was running when they fired.
* A step's ``assembly`` time is getting the next batch (host; with prefetch, the wait for it);
  its ``update`` time is the jitted step until ``jax.block_until_ready`` on its outputs. The
  update includes the host->device copy of the batch unless prefetch made that copy ahead in
  its background thread (then it is reported as ``transfer_ms``). They never overlap. Warm-up
  steps and steps that compiled are reported apart from the steady state.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field

import jax
import numpy as np

_COMPILE_EVENTS = (
    "/jax/core/compile/backend_compile_duration",
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
)
_lock = threading.Lock()
_active: list[CompileMonitor] = []
_registered = False


_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _listener(event: str, duration: float, **_kw) -> None:
    if event in _COMPILE_EVENTS:
        with _lock:
            for mon in _active:
                mon._on_compile_time(duration, backend=event == _COMPILE_EVENTS[0])


def _hit_listener(event: str, **_kw) -> None:
    if event == _CACHE_HIT_EVENT:
        with _lock:
            for mon in _active:
                mon._on_cache_hit()


def _ensure_listener() -> None:
    global _registered
    if not _registered:
        jax.monitoring.register_event_duration_secs_listener(_listener)
        jax.monitoring.register_event_listener(_hit_listener)
        _registered = True


_CACHE_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                   "jax_persistent_cache_min_entry_size_bytes")


def _reset_cache_backend() -> None:
    try:  # JAX initialises its cache object once; let it re-read the settings
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        pass


@contextlib.contextmanager
def compilation_cache(path: str | None):
    """JAX's persistent compilation cache in ``path`` for the block (every compiled step, however
    quick), then the previous settings again. ``None``: nothing changes. Opt-in, since a warm
    cache hides compile cost in a benchmark."""
    if not path:
        yield
        return
    os.makedirs(path, exist_ok=True)
    old = {k: getattr(jax.config, k) for k in _CACHE_SETTINGS}
    for k, v in zip(_CACHE_SETTINGS, (os.path.abspath(path), 0.0, 0)):
        jax.config.update(k, v)
    _reset_cache_backend()
    try:
        yield
    finally:
        for k, v in old.items():
            jax.config.update(k, v)
        _reset_cache_backend()


def cache_size(fn) -> int | None:
    """Number of compiled variants held by a jitted function (None if JAX does not say)."""
    try:
        return int(fn._cache_size())
    except (AttributeError, TypeError):
        return None


def dispatch_cache_full() -> bool:
    """Whether one of JAX's process-wide C++ dispatch caches is at capacity. From then on no newly
    jitted function keeps its compiled fast path (jax-ml/jax#39078, jax 0.10.x): its
    ``_cache_size()`` stays 0 and every call dispatches through Python. ``jax.clear_caches()``
    empties them. False where this JAX does not say."""
    try:
        from jax._src import pjit

        caches = (pjit._cpp_pjit_cache_fun_only, pjit._cpp_pjit_cache_explicit_attributes)
        return any(c.size() >= c.capacity() for c in caches)
    except Exception:  # pragma: no cover - other JAX versions
        return False


def free_dispatch_cache() -> bool:
    """If JAX's dispatch cache is full (:func:`dispatch_cache_full`), empty JAX's caches so that
    the steps about to be timed keep their fast path; returns whether it did. Only compiled
    programs are dropped (they compile again when called), never results."""
    if not dispatch_cache_full():
        return False
    jax.clear_caches()
    return True


class CompileCountError(RuntimeError):
    """Compilations could not be counted: refusing to report 0 (it would let compiling steps
    into the steady state)."""


class CompileMonitor:
    """Counts compilations and compile seconds per labelled jitted function.

    Counts come from the jitted function's own cache size; where JAX does not expose it, from
    ``jax.monitoring`` backend-compile events. Either way the first tracked call of a function
    must compile; if neither source sees that, :class:`CompileCountError` is raised rather than
    a silent 0.

    Restarts: a compile is identified by its label and a ``key`` (the padded shape of what it
    compiled). A compile of a key already compiled in an EARLIER segment of the run (before a
    restart, :meth:`load`) is a recompilation that an uninterrupted run would not have paid: it
    is counted in ``restart_counts`` / ``restart_seconds``, not in ``counts`` / ``seconds``. A
    shape met for the first time after a restart counts as a first compile, as it would have.
    """

    def __init__(self) -> None:
        _ensure_listener()
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.cache_hits: dict[str, int] = {}  # executables loaded from the persistent cache
        self.backend_events: dict[str, int] = {}
        self.ahead: dict[str, int] = {}  # of counts: compiled ahead of time (outside the timed steps)
        self.restart_counts: dict[str, int] = {}  # recompiles of keys compiled before a restart
        self.restart_seconds: dict[str, float] = {}
        self.compiled: dict[str, set] = {}  # keys compiled so far, per label (every segment)
        self._earlier: dict[str, set] = {}  # keys compiled in earlier segments (restored)
        self._events = 0  # any compile-related event (trace, lowering, backend compile, cache hit)
        self._label: str | None = None
        self._seen: set[int] = set()
        self._by_events: set[int] = set()  # functions whose cache JAX did not keep: counted by events
        self.counted_by_events: set[str] = set()  # their labels (a full dispatch cache)
        with _lock:
            _active.append(self)

    def state(self) -> dict:
        """Counts, seconds and compiled keys as plain data (kept in a checkpoint)."""
        return {"counts": dict(self.counts), "seconds": dict(self.seconds), "cache_hits": dict(self.cache_hits),
                "ahead": dict(self.ahead), "restart_counts": dict(self.restart_counts),
                "restart_seconds": dict(self.restart_seconds), "counted_by_events": sorted(self.counted_by_events),
                "compiled": {k: sorted([list(map(list, key)) for key in v]) for k, v in self.compiled.items()}}

    def load(self, state: dict) -> None:
        """Continue from :meth:`state` of an earlier segment: its counts go on, and its compiled
        keys are what a recompilation after this restart is recognised by."""
        for name in ("counts", "seconds", "cache_hits", "ahead", "restart_counts", "restart_seconds"):
            setattr(self, name, dict(state.get(name, {})))
        self.compiled = {k: {tuple(tuple(x) for x in key) for key in v} for k, v in state.get("compiled", {}).items()}
        self._earlier = {k: set(v) for k, v in self.compiled.items()}
        self.counted_by_events = set(state.get("counted_by_events", []))

    def _attribute(self, label: str, key, new: int, seconds: float) -> bool:
        """Book ``new`` compiles of ``key`` taking ``seconds``; True when they were restart recompiles."""
        if new <= 0:
            return False
        restart = key is not None and key in self._earlier.get(label, set())
        if key is not None:
            self.compiled.setdefault(label, set()).add(key)
        if restart:
            self.restart_counts[label] = self.restart_counts.get(label, 0) + new
            self.restart_seconds[label] = self.restart_seconds.get(label, 0.0) + seconds
            self.seconds[label] = self.seconds.get(label, 0.0) - seconds
        else:
            self.counts[label] = self.counts.get(label, 0) + new
        return restart

    def _on_compile_time(self, duration: float, backend: bool = False) -> None:
        self._events += 1
        if self._label is not None:
            self.seconds[self._label] = self.seconds.get(self._label, 0.0) + duration
            if backend:
                self.backend_events[self._label] = self.backend_events.get(self._label, 0) + 1

    def _on_cache_hit(self) -> None:
        self._events += 1
        if self._label is not None:
            self.cache_hits[self._label] = self.cache_hits.get(self._label, 0) + 1

    @contextlib.contextmanager
    def track(self, label: str, fn, key=None):
        """Attribute compile time during the block to ``label``; count new variants of ``fn``.

        ``key`` names what the call compiles for (:func:`shape_key` of its batch), so a
        recompilation after a restart is counted apart. Yields a dict: ``compiled`` (compiles in
        the block), ``compile_s`` and ``restart`` (whether they were restart recompiles).
        """
        before = cache_size(fn)
        sec_before = self.seconds.get(label, 0.0)
        ev_before = self.backend_events.get(label, 0)
        any_before = self._events
        self._label = label
        info = {"compiled": 0, "compile_s": 0.0, "restart": False}
        ok = False
        try:
            yield info
            ok = True
        finally:
            self._label = None
            after = cache_size(fn)
            events = self.backend_events.get(label, 0) - ev_before
            first = id(fn) not in self._seen
            if after is None or before is None or id(fn) in self._by_events:
                new = events
            else:
                new = after - before
                if first and ok and new <= 0 and after == 0 and events > 0:
                    # the call compiled but its function's cache kept nothing: JAX's process-wide
                    # dispatch cache is full (jax-ml/jax#39078); count this function by events
                    self._by_events.add(id(fn))
                    self.counted_by_events.add(label)
                    new = events
            if new > 0 and self._events == any_before:
                new = 0  # a dispatch-cache entry for an executable compiled ahead of time: no compile
            self._seen.add(id(fn))
            info["compiled"] = max(new, 0)
            info["compile_s"] = self.seconds.get(label, 0.0) - sec_before
            info["restart"] = self._attribute(label, key, max(new, 0), info["compile_s"])
        if ok and first and new <= 0:
            raise CompileCountError(
                f"the first call of the {label!r} step compiled nothing that could be counted "
                f"(cache size {before} -> {after}, {events} backend-compile events): this JAX version "
                "hides both, so compile counts would silently read 0")

    @contextlib.contextmanager
    def ahead_of_time(self, label: str, fn, key=None):
        """Count ONE compilation of ``fn`` done ahead of time in the block (``lower().compile()``).

        Yields a dict whose ``wall_s`` is set to the block's wall-clock seconds on exit, and
        ``restart`` to whether ``key`` was compiled before a restart (then counted apart).
        """
        info = {"wall_s": 0.0, "restart": False}
        sec_before = self.seconds.get(label, 0.0)
        self._label = label
        t0 = time.perf_counter()
        try:
            yield info
        finally:
            info["wall_s"] = time.perf_counter() - t0
            self._label = None
        self._seen.add(id(fn))
        info["restart"] = self._attribute(label, key, 1, self.seconds.get(label, 0.0) - sec_before)
        if not info["restart"]:
            self.ahead[label] = self.ahead.get(label, 0) + 1

    def close(self) -> None:
        """Stop counting compilations for this monitor."""
        with _lock:
            if self in _active:
                _active.remove(self)


def peak_device_memory() -> int | None:
    """Peak bytes in use on the default device since the process started, where the backend
    reports it (GPU/TPU ``memory_stats()``); None on backends that do not (the CPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except (AttributeError, RuntimeError, NotImplementedError):
        return None
    if not stats:
        return None
    value = stats.get("peak_bytes_in_use", stats.get("bytes_in_use"))
    return int(value) if value is not None else None


@dataclass
class StepLog:
    """Per-step records, kept as columns."""

    rows: dict[str, list] = field(default_factory=dict)

    def add(self, **kw) -> None:
        """Append one value per column, e.g. ``add(step=3, update_ms=12.5)``."""
        for k, v in kw.items():
            self.rows.setdefault(k, []).append(v)

    def __len__(self) -> int:
        return len(next(iter(self.rows.values()))) if self.rows else 0

    def frame(self):
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def shape_key(arrays, lead: int = 0) -> tuple:
    """What a step compiles for: the shapes of its batch's array leaves (hashable, JSON-able).

    Works on concrete arrays and on ``jax.ShapeDtypeStruct`` alike, so a shape compiled ahead
    of time and the same shape met in a step have one key. ``lead``: leading axes to leave out
    (the device axis of a data-parallel batch, host-local or global depending on placement).
    """
    return tuple(tuple(int(d) for d in leaf.shape[lead:]) for leaf in jax.tree_util.tree_leaves(arrays))


def timer() -> float:
    """A monotonic clock in seconds (``time.perf_counter``)."""
    return time.perf_counter()


class PhaseTimer:
    """Wall-clock seconds of named phases (``time.perf_counter``): ``with t("update"): ...``.

    Phases are timed by the caller's blocks, so they never overlap; a block that ends with
    ``jax.block_until_ready`` includes the device work it waited for.
    """

    def __init__(self) -> None:
        self.s: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        """Context manager adding the time spent inside to phase ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.s[name] = self.s.get(name, 0.0) + time.perf_counter() - t0

    def ms(self, name: str) -> float:
        """Time spent in phase ``name`` so far, in milliseconds."""
        return self.s[name] * 1e3


def first_use(df) -> np.ndarray:
    """Steps that ran their padded shape for the first time in their SEGMENT (a restarted run
    starts a new segment: a new process meets every shape anew, compiled ahead or not)."""
    cols = [c for c in ("segment", "n_node", "n_edge", "n_graph") if c in df]
    return ~df.duplicated(cols).to_numpy() if cols else np.zeros(len(df), bool)


def steady_mask(df, warmup_steps: int) -> np.ndarray:
    """The steady-state steps of ``steps.csv``: past warm-up, not compiling (nor sharing a call of
    several steps with a compile: it carries a share of the compile, train/calls.py), and not a
    padded shape's first run in its segment. The one rule every steady figure uses."""
    compiled = (df.groupby("call")["compiled"].transform("max") if "call" in df else df["compiled"]) > 0
    return ((df["step"] >= warmup_steps) & ~compiled & ~first_use(df)).to_numpy()


SLOW_STRETCH = 1.15  # a block of steady steps this much slower than the run's fast level is a slow stretch


def slow_stretch_fraction(step_ms: np.ndarray, block: int = 10) -> float:
    """Share of a run's steady steps that ran in a slow stretch of the machine: blocks of
    ``block`` consecutive steady steps whose median is more than :data:`SLOW_STRETCH` times the
    run's fast level (the 25th percentile of the block medians). On the 2-core machine this suite
    is developed on, the same process's steps run ~1.25x slower for 10-20 s at a time (the
    machine, not the process: not the allocator, the address layout or thread placement); a run
    with a high share measured a slower machine (NaN: fewer than 4 blocks)."""
    n = len(step_ms) // block
    if n < 4:
        return float("nan")
    med = np.median(np.asarray(step_ms[: n * block], float).reshape(n, block), axis=1)
    return float(np.mean(med > SLOW_STRETCH * np.percentile(med, 25)))


def summarise_steps(df, warmup_steps: int) -> dict:
    """Steady-state timing stats (ms) over steps past warm-up that did not compile (nor share a call
    of several steps with a compile) and did not run their padded shape for the first time in
    their segment.

    A shape's first run is slower even when it was compiled ahead of time (JAX fills its dispatch
    cache, the runtime warms up), so it is excluded like a compiling step; for shapes compiled on
    first use the two are the same steps. After a restart every shape runs for the first time
    again in the new process: those first runs are excluded too.
    """
    first_use_mask = first_use(df)
    steady = df[steady_mask(df, warmup_steps)]
    out = {
        "first_step_ms": float(df["combined_ms"].iloc[0]),
        "first_step_assembly_ms": float(df["assembly_ms"].iloc[0]),
        "first_step_update_ms": float(df["update_ms"].iloc[0]),
        "steady_steps": len(steady),
        "compiled_steps": int((df["compiled"] > 0).sum()),
        "first_use_steps": int(first_use_mask.sum()),
    }
    src = steady if len(steady) else df
    for col in ("assembly_ms", "update_ms", "combined_ms"):
        vals = src[col].to_numpy()
        out[f"{col}_median"] = float(np.median(vals))
        out[f"{col}_mean"] = float(np.mean(vals))
        out[f"{col}_std"] = float(np.std(vals))
        out[f"{col}_p90"] = float(np.percentile(vals, 90))
    out["slow_stretch_fraction"] = slow_stretch_fraction(steady["combined_ms"].to_numpy(float))
    out["graphs_per_s"] = float(src["real_graphs"].sum() / (src["combined_ms"].sum() / 1e3))
    out["update_graphs_per_s"] = float(src["real_graphs"].sum() / (src["update_ms"].sum() / 1e3))
    if "wait_ms" in df:
        out["wait_ms_mean"] = float(src["wait_ms"].mean())
        # share of the steady step spent waiting for data (prefetch keeping up: near 0)
        waits = src["wait_ms"].to_numpy(float)
        out["wait_fraction"] = float(waits.sum() / src["combined_ms"].sum()) if np.isfinite(waits).all() \
            else float("nan")
    if "transfer_ms" in df:
        out["transfer_ms_mean"] = float(src["transfer_ms"].mean())  # NaN: the copy is inside update
    out["compiled_ms_total"] = float(df.loc[df["compiled"] > 0, "combined_ms"].sum())
    return out
