"""Honest intervals for every speed figure of a sweep: a two-level bootstrap over the PROCESSES
(runs) of each group and, inside each process, over blocks of its steady steps.

A process is one run in a fresh process; on a busy or bimodal machine whole processes differ
(one fresh process in three to eight runs 15-30 % slower for its whole life here), so an
interval from one process's step-to-step spread is too narrow. The rule, stated once:

* A group's processes are its runs (seeds x repeats). Its steady graphs/s is the mean over its
  processes of each process's steady graphs/s (real graphs / seconds of its steady steps:
  ``train.instruments.steady_mask``), the figure the comparison table shows.
* A bootstrap replicate draws the group's processes with replacement and, inside each drawn
  process, its steady steps in blocks of :data:`BLOCK_STEPS` consecutive steps with replacement;
  graphs/s including compilation, time to train and overhead are whole-process figures and are
  drawn with the processes only. :data:`REPLICATES` replicates per group, seeded per group, so a
  table is reproducible.
* A ratio (a speedup, a break-even) is computed replicate by replicate from two groups'
  independent replicates; its 95 % interval is the 2.5th and 97.5th percentile (percentile
  bootstrap). A ratio whose interval holds 1 is "no difference beyond noise".
* A group is "too short to judge" when a process has fewer than :data:`MIN_BLOCKS` steady blocks
  (fewer than 50 steady steps), and "too noisy to judge" when its own steady interval is wider than
  :data:`MAX_REL_WIDTH` of its figure. With ONE process per group there is no process-to-process
  spread: its intervals are step-to-step only and say so.

scipy's bootstrap draws one level; this one needs two (processes, then blocks inside them), so it
is written here, vectorised, and tested against scipy's on the one-level case.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gnn_batching.rundir import CONFIG, STEPS

BLOCK_STEPS = 10  # consecutive steady steps per resampled block
MIN_BLOCKS = 5  # fewer steady blocks in a process: too short to judge
MAX_REL_WIDTH = 0.5  # a group's 95 % steady interval wider than this share of its figure: too noisy
REPLICATES = 2000
LEVEL = 0.95


@dataclass
class Process:
    """One run's timing: its steady blocks and its whole-run figures."""

    graphs: np.ndarray  # real graphs per steady block
    seconds: np.ndarray  # seconds per steady block
    incl_rate: float  # graphs/s including compilation
    train_wall_s: float
    overhead_s: float  # train_wall_s beyond its graphs at its steady rate
    steady_steps: int
    records: bool = True  # False: no steps.csv (a table built by hand): no steady interval

    @property
    def rate(self) -> float:
        """Steady graphs/s: every steady graph over every steady second."""
        return float(self.graphs.sum() / self.seconds.sum()) if self.seconds.sum() > 0 else float("nan")


def _warmup(run_dir: str) -> int:
    import yaml

    try:
        with open(os.path.join(run_dir, CONFIG), encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh) or {}
        return int((cfg.get("train") or {}).get("warmup_steps", 1))
    except (OSError, ValueError):
        return 1


def process_of(row: pd.Series) -> Process:
    """The timing of one finished run (a row of the collected table; its ``steps.csv``)."""
    from gnn_batching.train.instruments import steady_mask

    run_dir = row.get("run_dir")
    try:
        steps = pd.read_csv(os.path.join(str(run_dir), STEPS))
        steady = steps[steady_mask(steps, _warmup(str(run_dir)))]
    except (OSError, ValueError, KeyError):  # no per-step records (a table built by hand): no blocks
        steady, records = pd.DataFrame({"real_graphs": [], "combined_ms": []}), False
    else:
        records = True
    n = len(steady)
    blocks = np.arange(n) // BLOCK_STEPS
    if n >= BLOCK_STEPS and n % BLOCK_STEPS:  # a short last block joins the one before it
        blocks[blocks == blocks[-1]] = max(blocks[-1] - 1, 0)
    graphs = np.bincount(blocks, weights=steady["real_graphs"].to_numpy(float)) if n else np.zeros(0)
    seconds = np.bincount(blocks, weights=steady["combined_ms"].to_numpy(float) / 1e3) if n else np.zeros(0)
    rate = row.get("graphs_per_s", np.nan)
    wall = float(row.get("train_wall_s", np.nan))
    seen = float(row.get("graphs_seen", np.nan))
    overhead = wall - seen / rate if rate and np.isfinite(rate) else float("nan")
    return Process(graphs, seconds, float(row.get("graphs_per_s_incl_compile", np.nan)), wall, overhead, n,
                   records)


def _rng(key) -> np.random.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class Replicates:
    """A group's bootstrap replicates (each an array of :data:`REPLICATES` values)."""

    steady: np.ndarray
    incl: np.ndarray
    train_wall_s: np.ndarray
    overhead_s: np.ndarray
    processes: int
    steady_steps_min: int
    judge: str  # "" or why the group is too short / noisy to judge


def replicates(procs: list[Process], key, n: int = REPLICATES) -> Replicates:
    """The two-level bootstrap of one group (see the module docstring)."""
    rng = _rng(key)
    p = len(procs)
    pick = rng.integers(0, p, size=(n, p))  # processes drawn per replicate
    per = np.empty((p, n))  # each process's steady rate, its blocks drawn per replicate
    for i, pr in enumerate(procs):
        b = len(pr.graphs)
        if b == 0:
            per[i] = np.nan
            continue
        draw = rng.integers(0, b, size=(n, b))
        per[i] = pr.graphs[draw].sum(axis=1) / pr.seconds[draw].sum(axis=1)
    cols = np.arange(n)[:, None]
    steady = per[pick, cols].mean(axis=1)
    whole = {name: np.array([getattr(pr, name) for pr in procs])[pick].mean(axis=1)
             for name in ("incl_rate", "train_wall_s", "overhead_s")}
    if p == 1:  # no process-to-process spread to draw from
        whole = {k: np.full(n, np.nan) for k in whole}
    min_steps = min(pr.steady_steps for pr in procs)
    judge = ""
    if not all(pr.records for pr in procs):
        pass  # no per-step records: no steady interval, nothing to judge it by
    elif min(len(pr.graphs) for pr in procs) < MIN_BLOCKS:
        judge = f"too short to judge ({min_steps} steady steps; at least {MIN_BLOCKS * BLOCK_STEPS} per process)"
    else:
        point = float(np.mean([pr.rate for pr in procs]))
        lo, hi = interval(steady)
        if np.isfinite(point) and point > 0 and (hi - lo) / point > MAX_REL_WIDTH:
            judge = f"too noisy to judge (95 % interval {lo:.0f}-{hi:.0f} graphs/s around {point:.0f})"
    return Replicates(steady, whole["incl_rate"], whole["train_wall_s"], whole["overhead_s"], p, min_steps, judge)


def interval(x: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of replicates ``x`` (NaN when there are none)."""
    x = np.asarray(x, float)
    x = x[~np.isnan(x)]
    if not len(x):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    # with infinite replicates (a break-even that never comes) no interpolation between them
    lo, hi = np.quantile(x, [a, 1 - a], method="inverted_cdf" if np.isinf(x).any() else "linear")
    return float(lo), float(hi)


def group_replicates(df: pd.DataFrame, keys: list[str]) -> dict:
    """``{group key tuple: Replicates}`` for every group of ``df`` (runs that share ``keys``)."""
    out = {}
    for key, g in df.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        out[key] = replicates([process_of(r) for _, r in g.iterrows()], key)
    return out


def ratio(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """95 % interval of ``a / b`` from two groups' independent replicates."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return interval(np.asarray(a) / np.asarray(b))


def break_even(rep: Replicates, ref: Replicates, gpb: float) -> tuple[float, float]:
    """95 % interval of the steps after which ``rep``'s faster steps pay back its extra overhead
    over ``ref`` (inf: never, in that replicate)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = 1.0 / ref.steady - 1.0 / rep.steady
        extra = np.maximum(rep.overhead_s - ref.overhead_s, 0.0)
        steps = np.where(gain > 0, extra / gain / gpb, np.inf)
    return interval(steps)


def verdict_words(name_a: str, name_b: str, point: float, lo: float, hi: float, n_a: int, n_b: int,
                  judge: str = "") -> str:
    """What an interval says about ``name_a`` over ``name_b``: faster, slower or no difference
    beyond noise (or too short / noisy to judge), with the interval and the processes behind it."""
    procs = f"{n_a} process{'es' if n_a != 1 else ''}" if n_a == n_b else f"{n_a} / {n_b} processes"
    if min(n_a, n_b) < 2:
        procs += "; step-to-step noise only"
    if judge:
        return f"{name_a} / {name_b} {point:.2f}x: {judge}"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{name_a} {point:.2f}x {name_b} (no interval: {procs}, no per-step records)"
    span = f"[{lo:.2f}, {hi:.2f}], {procs}"
    if lo <= 1.0 <= hi:
        return f"no difference beyond noise between {name_a} and {name_b} ({point:.2f}x {span})"
    word = "faster" if point > 1 else "slower"
    return f"{name_a} {point:.2f}x {word} than {name_b} {span}"
