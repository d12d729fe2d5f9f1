"""Certain numbers: speed figures with intervals over processes, verdicts that say when a
difference is within noise, and `results --against` between two sweeps (issue 36)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from gnn_batching.sweep import intervals as iv

PLUGIN = '''
from gnn_batching import register_method
from gnn_batching.batching.methods import Dynamic


@register_method("dynamic-twin")
class DynamicTwin(Dynamic):
    """Dynamic batching under another name: the same batches, the same steps."""
'''

SLOW = '''
import time

import jax

import gnn_batching.train.run as run

_steps_for = run.steps_for


class _Slow:
    """The train step plus {ms} ms of sleep inside the timed update: a deliberately slower build."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *a, **k):
        out = jax.block_until_ready(self.fn(*a, **k))  # then sleep: the step's time grows by exactly that
        time.sleep({ms} / 1e3)
        return out

    def __getattr__(self, name):
        return getattr(self.fn, name)


def steps_for(*a, **k):
    train_step, eval_step = _steps_for(*a, **k)
    return _Slow(train_step), eval_step


run.steps_for = steps_for
'''


def _sweep(tmp_path, name: str, methods: list[str], modules: list[str], repeats: int = 3, steps: int = 80) -> str:
    d = {"name": name, "output_dir": str(tmp_path / name), "repeats": repeats,
         "base": {"modules": modules, "dataset": {"name": "aflow-synthetic", "limit": 300},
                  "model": {"name": "schnet", "latent_size": 64, "n_rbf": 64, "message_passing_steps": 3},
                  "batching": {"batch_size": 32},
                  "train": {"num_train_steps": steps, "eval_every": 0, "device_probe_batches": 0}},
         "grid": {"batching.method": methods, "train.seed": [0]}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d))
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "sweep", str(path)], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return str(tmp_path / name)


def _split(sweep: str, parts: int, turns: int) -> list[str]:
    """One sweep's runs dealt into ``parts`` sweep folders by blocks of ``turns`` repeats (0-5 |
    6-11): identical sweeps, each a whole period of the sweep's turn order (``grid.turn_order``,
    three methods: every method once at every place of a turn per three turns, right after every
    other method once per six). A half of one period is biased: dealt by parity (0, 2, 4) one
    method runs first twice; by blocks of three (0-2 | 3-5) the twin runs right after dynamic in
    one half and before it in the other. Under a fixed order (A B C A B C) one method under two
    names read 0.90x here (7 turns of 8) and 1.10x in CI, intervals excluding 1: an order effect
    no interval over one half's processes can see. The halves run one after the other (~4 min
    each), long against this machine's 10-20 s slow stretches, so both see them alike."""
    import shutil

    from gnn_batching.sweep.layout import repeat_of

    out = []
    for k in range(parts):
        dst = f"{sweep}-{k}"
        os.makedirs(os.path.join(dst, "runs"))
        shutil.copy(os.path.join(sweep, "sweep.json"), dst)
        for name in os.listdir(os.path.join(sweep, "runs")):
            src = os.path.join(sweep, "runs", name)
            if os.path.isdir(src) and repeat_of(name) // turns == k:
                shutil.copytree(src, os.path.join(dst, "runs", name))
        out.append(dst)
    return out


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("certain")
    (tmp / "twin.py").write_text(PLUGIN)
    (tmp / "slow.py").write_text(SLOW.format(ms=30))
    ab = _sweep(tmp, "ab", ["dynamic", "dynamic-twin", "static-max"], [str(tmp / "twin.py")], repeats=12)
    a, b = _split(ab, 2, 6)
    slow = _sweep(tmp, "slow", ["dynamic"], [str(tmp / "slow.py")])
    return {"a": a, "b": b, "ab": ab, "slow": slow}


def _inconsistent(one: pd.DataFrame, two: pd.DataFrame, level: float = 0.99) -> list[tuple]:
    """The (figure, method) pairs on which two identical sweeps disagree beyond their intervals: each
    interval's log half-width back to a standard error (Welch's 95 % t quantile, 2(n - 1) degrees of
    freedom for n processes a side), then a two-sided ``level`` test of two independent estimates
    being equal: the log ratios differ by more than t (degrees summed) x sqrt(se1^2 + se2^2). Asking
    instead whether one sweep's POINT lies inside the other's interval is no 95 % check: the point
    carries its own noise (simulated below, exact intervals: 44 % of tables had a miss, 19 % two or
    more), which made this test flaky."""
    from scipy import stats

    out = []
    for col in ("speedup_steady", "speedup_incl_compile"):
        ref = [set(t.index[(t[f"{col}_low"] == 1.0) & (t[f"{col}_high"] == 1.0)]) for t in (one, two)]
        assert ref[0] == ref[1] and len(ref[0]) == 1, ref  # the same slowest method: the same reference
        (r0,) = ref[0]
        for m in one.index.difference(list(ref[0])):
            x, y = one.loc[m], two.loc[m]
            df = [2 * (min(t.loc[m, "processes"], t.loc[r0, "processes"]) - 1) for t in (one, two)]
            se = [(np.log(r[f"{col}_high"]) - np.log(r[f"{col}_low"])) / 2 / stats.t.ppf(0.975, d)
                  for r, d in zip((x, y), df)]
            gap = abs(np.log(x[col]) - np.log(y[col]))
            bound = stats.t.ppf(0.5 + level / 2, sum(df)) * np.hypot(*se)
            if not gap <= bound:
                out.append((col, m, round(float(x[col]), 3), round(float(y[col]), 3), round(float(gap), 3),
                            round(float(bound), 3)))
    return out


def test_the_consistency_rule_is_a_95_percent_check_and_sees_narrow_intervals():
    """The rule of the test below, on simulated sweeps (n = 6 processes a side, as the fixture's
    halves; log-normal figures): with Welch's t intervals two identical sweeps are inconsistent on
    about 1 figure in 100 (two of a table's four figures: about 1 table in 300); intervals half as
    wide on 1 figure in 6 (two: 1 table in 7). The old rule (a point inside the other's interval,
    both ways) missed twice or more in a table far more often."""
    from scipy import stats

    rng = np.random.default_rng(0)

    def sweep(scale: float) -> pd.DataFrame:
        ref = np.exp(rng.normal(0, 0.05, (2, 6)))  # steady and incl. compile of the slowest method
        rows = {}
        for m in ("a", "b"):
            row = {"processes": 6}
            for c, col in enumerate(("speedup_steady", "speedup_incl_compile")):
                x = 2 * np.exp(rng.normal(0, 0.05, 6))
                ci = stats.ttest_ind(np.log(x), np.log(ref[c]), equal_var=False).confidence_interval(0.95)  # log ratio
                mid = np.log(x.mean() / ref[c].mean())
                row |= {col: np.exp(mid), f"{col}_low": np.exp(mid - scale * (mid - ci[0])),
                        f"{col}_high": np.exp(mid + scale * (ci[1] - mid))}
            rows[m] = row
        rows["ref"] = {"processes": 6} | {f"{col}{end}": 1.0 for col in ("speedup_steady", "speedup_incl_compile")
                                          for end in ("", "_low", "_high")}  # the slowest: over itself, [1, 1]
        return pd.DataFrame.from_dict(rows, orient="index")

    def misses(scale: float, n: int = 400) -> np.ndarray:
        return np.array([len(_inconsistent(sweep(scale), sweep(scale))) for _ in range(n)])

    def point_outside(one: pd.DataFrame, two: pd.DataFrame) -> int:  # the old rule
        return sum(int(((x[c] < y[f"{c}_low"]) | (x[c] > y[f"{c}_high"])).sum())
                   for x, y in ((one, two), (two, one)) for c in ("speedup_steady", "speedup_incl_compile"))

    exact, narrow = misses(1.0), misses(0.5)
    assert exact.mean() / 4 < 0.02 and (exact >= 2).mean() < 0.01, (exact.mean(), (exact >= 2).mean())
    assert narrow.mean() / 4 > 0.08 and narrow.mean() > 5 * exact.mean(), (narrow.mean(), exact.mean())
    old = np.array([point_outside(sweep(1.0), sweep(1.0)) for _ in range(400)])
    assert (old >= 2).mean() > 0.1, (old >= 2).mean()


@pytest.mark.slow  # two small sweeps in other processes: run by .ci/run and `pytest -m slow`
def test_the_same_sweep_twice_lies_inside_each_others_intervals(sweeps):
    from gnn_batching.sweep.results import collect, comparison

    one, two = (comparison(collect(sweeps[k])).set_index("method") for k in ("a", "b"))
    # 4 figures (2 methods x steady / incl. compile): with exact intervals two inconsistent ones come
    # about 1 run in 300 (simulated above); one is allowed, because this machine's processes
    # are heavier-tailed than the simulation (whole processes 15-30 % slow, slow stretches, and one
    # slow process moves its steady AND incl. compile figures). Intervals from step-to-step noise
    # only fail it; merely narrow ones (a normal quantile) seldom do: the
    # sharper guards are test_intervals_are_student_and_welch_t_over_processes and --against below
    outside = _inconsistent(one, two)
    assert len(outside) <= 1, outside
    assert (one["processes"] == 6).all() and (two["processes"] == 6).all()


@pytest.mark.slow
def test_the_verdict_names_a_clear_winner_and_says_when_there_is_none(sweeps):
    from gnn_batching.sweep.results import collect
    from gnn_batching.sweep.verdict import verdict

    same = []
    for k in ("a", "b"):
        df = collect(sweeps[k])
        (line,) = verdict(df)  # the two fastest are the same method under two names
        steady = line.split("; including compilation")[0]
        assert "6 processes" in steady, line
        same.append("no difference beyond noise between dynamic" in steady)
        (apart,) = verdict(df[df["method"] != "dynamic-twin"])
        assert "steady state: dynamic " in apart and "x faster than static-max [" in apart, apart
        assert "6 processes" in apart
    # A 95 % interval calls one method under two names different in 1 sweep of 20 by design, so
    # the two halves (each order-balanced) both do in ~1 of 400; intervals from step-to-step noise
    # alone (or a method always first in its turn, which read 1.1x apart in CI) call both different
    assert any(same), same


@pytest.mark.slow
def test_results_against_says_same_for_the_same_and_slower_for_a_slowed_build(sweeps, capsys):
    from gnn_batching.cli import main

    assert main(["results", sweeps["b"], "--against", sweeps["a"], "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["measure"] for r in rows} == {"steady", "incl. compile"} and len(rows) == 6
    # 6 verdicts at 95 % each on one build: ~1 in 4 such tables has a row outside by chance (and
    # this machine's slow stretches add to it). Guarded: most say same, none certainly differs by
    # more than 10 % (a wrong interval, too narrow or not over processes, fails one or the other)
    same = [r for r in rows if r["verdict"] == "same"]
    assert len(same) >= 4, rows
    assert all(r["high"] > 0.9 and r["low"] < 1.1 for r in rows), rows
    # the slowed build against all twelve processes of the old one (three alone: one stray process can
    # make a group too noisy to judge, which the table then says instead of a verdict)
    assert main(["results", sweeps["slow"], "--against", sweeps["ab"], "--json", "--fail-slower", "0.05"]) == 1
    rows = json.loads(capsys.readouterr().out)
    (steady,) = [r for r in rows if r["measure"] == "steady"]
    assert steady["verdict"] == "slower" and steady["high"] < 1
    # the right ratio: the slowed build's mean steady graphs/s over the old build's, as a reviewer
    # computes them from the two tables; and a step slower by the 30 ms of sleep or more (5 % slack for
    # the two sweeps' machine phases), but not by twice that: a step right after a 30 ms sleep runs
    # slower than one right after another (one run here: 52 ms against 12.4 + 30)
    from gnn_batching.sweep.results import collect

    old, new = collect(sweeps["ab"]), collect(sweeps["slow"])
    rates = [d.loc[d["method"] == "dynamic", "graphs_per_s"].mean() for d in (new, old)]
    assert (steady["new"], steady["old"]) == pytest.approx(tuple(rates), rel=1e-9)
    assert steady["ratio"] == pytest.approx(rates[0] / rates[1], rel=1e-9)
    ms = old.loc[old["method"] == "dynamic", "combined_ms_mean"].mean()
    assert ms / (ms + 60.0) < steady["ratio"] < ms / (ms + 30.0) * 1.05
    assert main(["results", sweeps["b"], "--against", sweeps["a"], "--fail-slower", "0.10"]) == 0
    assert "same" in capsys.readouterr().out


def _procs(rates, blocks=8, seconds=0.1):
    return [iv.Process(np.full(blocks, r * seconds), np.full(blocks, seconds), r / 2, 10.0, 1.0, 10 * blocks)
            for r in rates]


def test_intervals_are_student_and_welch_t_over_processes():
    """A group's interval is Student's t of its processes' mean; a ratio's is Welch's t of the log
    figures, exponentiated (scipy's tests); with one process: a block bootstrap, step-to-step only."""
    from scipy import stats

    a, b = iv.Group(_procs([100.0, 96.0, 104.0])), iv.Group(_procs([80.0, 83.0, 79.0, 81.0]))
    ci = stats.ttest_1samp([100.0, 96.0, 104.0], 0).confidence_interval(0.95)
    assert a.interval("steady") == pytest.approx((ci.low, ci.high))
    w = stats.ttest_ind(np.log([100.0, 96.0, 104.0]), np.log([80.0, 83.0, 79.0, 81.0]), equal_var=False)
    lo, hi = iv.ratio_interval(a, b, "steady")
    assert (lo, hi) == pytest.approx(tuple(np.exp(w.confidence_interval(0.95))))
    assert 1 < lo < 100 / 80.75 < hi
    one = iv.Group([iv.Process(np.array([10.0, 11, 9, 10, 10]), np.full(5, 0.1), 50.0, 1.0, 0.1, 50)])
    lo1, hi1 = one.interval("steady")
    assert lo1 < 100 < hi1 and np.isnan(one.interval("incl")).all()  # no whole-run interval from one process
    assert np.isfinite(iv.ratio_interval(one, a, "steady")).all() and np.isnan(iv.ratio_interval(one, a, "incl")).all()


def test_a_short_or_noisy_run_is_not_judged_and_one_process_says_so():
    short = iv.Group([iv.Process(np.full(3, 10.0), np.full(3, 0.1), 90.0, 1.0, 0.1, 30) for _ in range(3)])
    assert short.judge.startswith("too short to judge (30 steady steps")
    noisy = iv.Group(_procs([100.0, 20.0, 180.0]))
    assert noisy.judge.startswith("too noisy to judge")
    assert iv.Group(_procs([100.0, 101.0, 99.0])).judge == ""
    assert "step-to-step noise only" in iv.verdict_words("a", "b", 1.5, 1.4, 1.6, 1, 1)
    assert iv.verdict_words("a", "b", 1.02, 0.97, 1.08, 3, 3).startswith("no difference beyond noise between a and b")
    assert iv.verdict_words("a", "b", 1.42, 1.31, 1.55, 3, 3) == "a 1.42x faster than b [1.31, 1.55], 3 processes"


def test_a_runs_steps_are_read_once_per_version_of_its_file(tmp_path, monkeypatch):
    """The tables, the verdict, the best-new comparison and the report all ask for the same runs'
    steady blocks: steps.csv is read once, and read again when the file changes (a resumed run)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def write(n: int, ms: float) -> None:
        pd.DataFrame({"step": range(n), "compiled": [1] + [0] * (n - 1), "shape": ["s"] * n,
                      "real_graphs": [10] * n, "combined_ms": [ms] * n}).to_csv(run_dir / "steps.csv", index=False)

    reads = []
    real_read = iv.pd.read_csv
    monkeypatch.setattr(iv.pd, "read_csv", lambda *a, **k: reads.append(a[0]) or real_read(*a, **k))
    write(61, 10.0)
    row = pd.Series({"run_dir": str(run_dir), "graphs_per_s": 1000.0})
    first, again = iv.process_of(row), iv.process_of(row)
    assert len(reads) == 1 and first.steady_steps == again.steady_steps == 60
    assert first.rate == pytest.approx(1000.0)
    write(81, 20.0)  # a longer file, slower steps: a new version
    later = iv.process_of(row)
    assert len(reads) == 2 and later.steady_steps == 80 and later.rate == pytest.approx(500.0)


def test_break_even_range_from_the_interval_ends():
    fast = iv.Group([iv.Process(np.full(8, 20.0), np.full(8, 0.1), 50.0, 30.0, o, 80) for o in (10.0, 11.0, 9.0)])
    slow = iv.Group([iv.Process(np.full(8, r), np.full(8, 0.1), 90.0, 10.0, 1.0, 80) for r in (10.0, 10.2, 9.8)])
    lo, hi = iv.break_even(fast, slow, gpb=10.0)
    assert 0 < lo < hi < np.inf  # 2x faster steps pay back ~9 s of extra overhead after a finite number of steps
    lo, hi = iv.break_even(slow, fast, gpb=10.0)
    assert lo == hi == np.inf  # slower steps never pay back anything


def test_repeats_of_a_seed_are_one_sample_in_the_test_error_tests():
    """Repeats run the same seed again for timing; they learn the same thing, so Welch's test
    sees one value per seed, not per process (else identical repeats would fake significance)."""
    from gnn_batching.sweep.significance import pairwise_tests

    rows = [{"dataset": "qm9", "model": "schnet", "batch_size": 16, "method": m, "seed": s, "repeat": r,
             "test_rmse": base + 0.1 * s} for m, base in (("a", 1.0), ("b", 1.05)) for s in (0, 1) for r in (0, 1, 2)]
    t = pairwise_tests(pd.DataFrame(rows))
    assert t[["n_a", "n_b"]].iloc[0].tolist() == [2, 2]


def test_a_slow_stretch_of_the_machine_is_measured_in_the_run():
    from gnn_batching.train.instruments import slow_stretch_fraction

    fast, slow = np.full(60, 10.0), np.full(20, 12.5)  # 20 steps 1.25x slower: 2 of 8 blocks
    assert slow_stretch_fraction(np.concatenate([fast[:30], slow, fast[30:]])) == pytest.approx(0.25)
    assert slow_stretch_fraction(fast + np.random.default_rng(0).normal(0, 0.2, 60)) == 0.0
    assert np.isnan(slow_stretch_fraction(fast[:30]))
