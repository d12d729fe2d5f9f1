"""Honest intervals for every speed figure of a sweep, over the PROCESSES (runs) behind it.

A process is one run in a fresh process. On a busy or bimodal machine whole processes differ
(here one fresh process in three to eight runs 15-30 % slower for its whole life), so an
interval from one process's step-to-step spread is too narrow. The rules, stated once (the guide
and every report repeat them):

* A group's processes are its runs (seeds x repeats). Its steady graphs/s is the mean over its
  processes of each process's steady graphs/s (real graphs / seconds of its steady steps,
  ``train.instruments.steady_mask``); graphs/s including compilation, time to train and overhead
  are one figure per process, averaged the same way. Each process's figure already carries its
  own step-to-step noise, so their spread is process-to-process AND step-to-step variation.
* With two or more processes a group's 95 % interval is Student's t interval of that mean
  (``scipy.stats.ttest_1samp``), and a ratio of two groups (a speedup, NEW over OLD) is Welch's
  t interval of the difference of their log figures, exponentiated (``scipy.stats.ttest_ind``,
  unequal variances). The t distribution is what makes three processes honest: a percentile
  bootstrap over three processes came out too narrow (an identical rerun's figures fell outside
  its intervals), because it cannot see a spread wider than the three values it resamples.
* With ONE process there is no process-to-process spread: the steady figures get a percentile
  bootstrap over blocks of :data:`BLOCK_STEPS` consecutive steady steps (``scipy.stats.bootstrap``;
  step-to-step noise only, and every verdict says so); whole-run figures get no interval.
* A ratio whose interval holds 1 is "no difference beyond noise".
* A group's slow processes are those whose steady steps ran more than :data:`SLOW_PROCESS` times
  slower than its fastest process's: typically a process that spent much of its life in slow
  stretches of the machine (here 10-20 s at ~1.25x, docs/measurements.md; the README's two slow
  processes have ``slow_stretch_fraction`` 0.43 and 0.31, their fast sibling 0.00, though a share
  like that alone does not make a process slow). They stay in every figure and
  interval (they are part of what the machine does); the verdict names them, so a wide interval
  says why it is wide.
* A group is "too short to judge" when a process has fewer than :data:`MIN_BLOCKS` blocks of
  steady steps (fewer than 50), and "too noisy to judge" when its own steady interval is wider
  than its figure itself (:data:`MAX_REL_WIDTH`); its ratios are then not read.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gnn_batching.rundir import CONFIG, STEPS

BLOCK_STEPS = 10  # consecutive steady steps per block (one-process bootstrap; the too-short rule)
MIN_BLOCKS = 5  # fewer steady blocks in a process: too short to judge
MAX_REL_WIDTH = 1.0  # a group's 95 % steady interval wider than its figure itself: too noisy
SLOW_PROCESS = 1.15  # a process more than this much slower (steady) than its group's fastest is slow
LEVEL = 0.95
RESAMPLES = 2000  # one-process block bootstrap


@dataclass
class Process:
    """One run's timing: its steady blocks and its whole-run figures."""

    graphs: np.ndarray  # real graphs per steady block
    seconds: np.ndarray  # seconds per steady block
    incl_rate: float  # graphs/s including compilation
    train_wall_s: float
    overhead_s: float  # train_wall_s beyond its graphs at its steady rate
    steady_steps: int
    records: bool = True  # False: no steps.csv (a table built by hand): its summary's figures only
    summary_rate: float = float("nan")

    @property
    def rate(self) -> float:
        """Steady graphs/s: every steady graph over every steady second (the summary's figure
        when there are no per-step records)."""
        if self.records and self.seconds.sum() > 0:
            return float(self.graphs.sum() / self.seconds.sum())
        return self.summary_rate


def _warmup(run_dir: str) -> int:
    import yaml

    try:
        with open(os.path.join(run_dir, CONFIG), encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh) or {}
        return int((cfg.get("train") or {}).get("warmup_steps", 1))
    except (OSError, ValueError):
        return 1


# a run's steady blocks per version of its steps.csv (path, inode, size, mtime, warm-up): the tables,
# the verdict, the best-new comparison and the report each ask for the same runs
_BLOCKS: dict[tuple, tuple[np.ndarray, np.ndarray, int, bool]] = {}


def _steady_blocks(run_dir: str) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """A run's steady graphs and seconds per block of ``BLOCK_STEPS`` steps, its steady steps and
    whether it has per-step records; read once per version of its ``steps.csv``."""
    from gnn_batching.train.instruments import steady_mask

    path, warmup = os.path.join(run_dir, STEPS), _warmup(run_dir)
    try:
        st = os.stat(path)
        key: tuple | None = (path, st.st_ino, st.st_size, st.st_mtime_ns, warmup)
    except OSError:
        key = None
    if key in _BLOCKS:
        return _BLOCKS[key]
    try:
        steps = pd.read_csv(path)
        steady = steps[steady_mask(steps, warmup)]
        records = True
    except (OSError, ValueError, KeyError):  # no per-step records (a table built by hand): no blocks
        steady, records = pd.DataFrame({"real_graphs": [], "combined_ms": []}), False
    n = len(steady)
    blocks = np.arange(n) // BLOCK_STEPS
    if n >= BLOCK_STEPS and n % BLOCK_STEPS:  # a short last block joins the one before it
        blocks[blocks == blocks[-1]] = max(blocks[-1] - 1, 0)
    graphs = np.bincount(blocks, weights=steady["real_graphs"].to_numpy(float)) if n else np.zeros(0)
    seconds = np.bincount(blocks, weights=steady["combined_ms"].to_numpy(float) / 1e3) if n else np.zeros(0)
    out = (graphs, seconds, n, records)
    if key is not None and records:
        _BLOCKS[key] = out
    return out


def process_of(row: pd.Series) -> Process:
    """The timing of one finished run (a row of the collected table; its ``steps.csv``)."""
    graphs, seconds, n, records = _steady_blocks(str(row.get("run_dir")))
    rate = float(row.get("graphs_per_s", np.nan))
    wall = float(row.get("train_wall_s", np.nan))
    seen = float(row.get("graphs_seen", np.nan))
    overhead = wall - seen / rate if rate and np.isfinite(rate) else float("nan")
    return Process(graphs, seconds, float(row.get("graphs_per_s_incl_compile", np.nan)), wall, overhead, n,
                   records, rate)


@dataclass
class Group:
    """The processes of one group of runs and what they allow."""

    procs: list[Process]

    @property
    def processes(self) -> int:
        """How many fresh processes (runs) are behind the group's figures."""
        return len(self.procs)

    def values(self, what: str) -> np.ndarray:
        """Per-process figures: ``steady``, ``incl``, ``train_wall_s`` or ``overhead_s``."""
        attr = {"steady": "rate", "incl": "incl_rate"}.get(what, what)
        return np.array([getattr(p, attr) for p in self.procs], float)

    @property
    def slow_processes(self) -> int:
        """How many of its processes ran steady more than :data:`SLOW_PROCESS` times slower than
        its fastest, among those with a steady figure (0 with fewer than two: nothing to compare)."""
        x = self.values("steady")
        x = x[np.isfinite(x) & (x > 0)]
        if len(x) < 2:
            return 0
        return int(np.sum(x * SLOW_PROCESS < x.max()))

    @property
    def steady_steps_min(self) -> int:
        """The fewest steady steps of any of its processes."""
        return min(p.steady_steps for p in self.procs)

    @property
    def judge(self) -> str:
        """``""``, or why its steady figure is too short or too noisy to judge."""
        if not all(p.records for p in self.procs):
            return ""  # no per-step records: nothing to judge the steady window by
        if min(len(p.graphs) for p in self.procs) < MIN_BLOCKS:
            return (f"too short to judge ({self.steady_steps_min} steady steps; at least "
                    f"{MIN_BLOCKS * BLOCK_STEPS} per process)")
        point = float(np.mean(self.values("steady")))
        lo, hi = self.interval("steady")
        if np.isfinite(point) and point > 0 and np.isfinite(lo) and (hi - lo) / point > MAX_REL_WIDTH:
            return f"too noisy to judge (95 % interval [{lo:.0f}, {hi:.0f}] graphs/s around {point:.0f})"
        return ""

    def interval(self, what: str) -> tuple[float, float]:
        """95 % interval of the group's mean figure (see the module docstring)."""
        x = self.values(what)
        if np.isnan(x).any():
            return float("nan"), float("nan")
        if len(x) >= 2:
            return _t_interval(x)
        if what == "steady" and self.procs[0].records and len(self.procs[0].graphs) >= 2:
            p = self.procs[0]
            return _bootstrap((np.stack([p.graphs, p.seconds]),), lambda a, axis: _rate(a, axis))
        return float("nan"), float("nan")


def _quiet(fn):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # identical processes: scipy warns of precision loss, answers exactly
        return fn()


def _t_interval(x: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    ci = _quiet(lambda: stats.ttest_1samp(x, 0.0).confidence_interval(LEVEL))
    return float(ci.low), float(ci.high)


def _rate(a: np.ndarray, axis: int) -> np.ndarray:
    return a[0].sum(axis=axis) / a[1].sum(axis=axis)


def _bootstrap(data: tuple, statistic) -> tuple[float, float]:
    from scipy import stats

    res = _quiet(lambda: stats.bootstrap(data, statistic, vectorized=True, axis=-1, n_resamples=RESAMPLES,
                                         method="percentile", confidence_level=LEVEL, random_state=0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_interval(a: Group, b: Group, what: str) -> tuple[float, float]:
    """95 % interval of ``a``'s mean figure over ``b``'s: Welch's t on log figures with two or more
    processes each; for steady figures with one process on a side, a block bootstrap (step-to-step
    only); else none."""
    from scipy import stats

    xa, xb = a.values(what), b.values(what)
    if np.isnan(xa).any() or np.isnan(xb).any() or (xa <= 0).any() or (xb <= 0).any():
        return float("nan"), float("nan")
    if len(xa) >= 2 and len(xb) >= 2:
        la, lb = np.log(xa), np.log(xb)
        if np.ptp(la) == 0 and np.ptp(lb) == 0:
            r = float(xa[0] / xb[0])
            return r, r
        ci = _quiet(lambda: stats.ttest_ind(la, lb, equal_var=False).confidence_interval(LEVEL))
        return float(np.exp(ci.low)), float(np.exp(ci.high))
    if what != "steady" or not all(p.records and len(p.graphs) >= 2 for p in (*a.procs, *b.procs)):
        return float("nan"), float("nan")
    da = np.stack([np.concatenate([p.graphs for p in a.procs]), np.concatenate([p.seconds for p in a.procs])])
    db = np.stack([np.concatenate([p.graphs for p in b.procs]), np.concatenate([p.seconds for p in b.procs])])
    return _bootstrap((da, db), lambda x, y, axis: _rate(x, axis) / _rate(y, axis))


def break_even(rep: Group, ref: Group, gpb: float) -> tuple[float, float]:
    """95 % range of the steps after which ``rep``'s faster steps pay back its extra overhead over
    ``ref``: from the ends of the steady ratio's interval and of the overhead difference's (inf:
    never)."""
    from scipy import stats

    lo_r, hi_r = ratio_interval(rep, ref, "steady")
    oa, ob = rep.values("overhead_s"), ref.values("overhead_s")
    if not (np.isfinite(lo_r) and np.isfinite(hi_r)) or np.isnan(oa).any() or np.isnan(ob).any():
        return float("nan"), float("nan")
    if len(oa) >= 2 and len(ob) >= 2 and (np.ptp(oa) > 0 or np.ptp(ob) > 0):
        ci = _quiet(lambda: stats.ttest_ind(oa, ob, equal_var=False).confidence_interval(LEVEL))
        d_lo, d_hi = max(float(ci.low), 0.0), max(float(ci.high), 0.0)
    else:
        d_lo = d_hi = max(float(oa.mean() - ob.mean()), 0.0)
    per_graph_ref = 1.0 / float(np.mean(ref.values("steady")))

    def steps(extra: float, r: float) -> float:
        gain = per_graph_ref * (1.0 - 1.0 / r)  # seconds saved per graph
        return extra / gain / gpb if gain > 0 else float("inf")

    return steps(d_lo, hi_r), steps(d_hi, lo_r)


def groups(df: pd.DataFrame, keys: list[str]) -> dict:
    """``{group key tuple: Group}`` for every group of ``df`` (runs that share ``keys``)."""
    out = {}
    for key, g in df.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        out[key] = Group([process_of(r) for _, r in g.iterrows()])
    return out


def verdict_word(ratio: float, lo: float, hi: float) -> str:
    """One word for a ratio and its interval: ``faster`` / ``slower`` when the interval excludes 1,
    ``same`` (no difference beyond noise) when it holds it, ``no interval`` without one."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval"
    if lo <= 1.0 <= hi:
        return "same"
    return "faster" if ratio > 1 else "slower"


def verdict_words(name_a: str, name_b: str, point: float, lo: float, hi: float, n_a: int, n_b: int,
                  judge: str = "") -> str:
    """What an interval says about ``name_a`` over ``name_b``: faster, or no difference beyond
    noise (or too short / noisy to judge), with the interval and the processes behind it."""
    procs = f"{n_a} process{'es' if n_a != 1 else ''}" if n_a == n_b else f"{n_a} / {n_b} processes"
    if min(n_a, n_b) < 2:
        procs += "; step-to-step noise only"
    if judge:
        return f"{name_a} / {name_b} {point:.2f}x: {judge}"
    word = verdict_word(point, lo, hi)
    if word == "no interval":
        return f"{name_a} {point:.2f}x {name_b} (no interval: {procs})"
    span = f"[{lo:.2f}, {hi:.2f}], {procs}"
    if word == "same":
        return f"no difference beyond noise between {name_a} and {name_b} ({point:.2f}x {span})"
    return f"{name_a} {point:.2f}x {word} than {name_b} {span}"
