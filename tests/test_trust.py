"""Numbers a reviewer can trust: each test guards one way a figure could silently be wrong.

Hand-computed checks recompute the summary from the raw per-step records; validation tests
drive the real command line and check that nothing is written on failure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TEST_CONFIG, method_config, random_store

from gnn_batching.batching import BatchingConfig, make_loaders
from gnn_batching.cli import main
from gnn_batching.config import load_config
from gnn_batching.data import DatasetSpec, load_dataset
from gnn_batching.data.store import make_splits
from gnn_batching.errors import ConfigError, OversizeGraphError
from gnn_batching.plugins import method_names
from gnn_batching.rundir import default_run_dir
from gnn_batching.train.instruments import summarise_steps
from gnn_batching.train.run import run
from gnn_batching.train.steps import masked_mse

METHOD_NAMES = method_names()  # every registered method (the package's own)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = TEST_CONFIG  # the tiny run
TINY: list[str] = []
SET_TINY: list[str] = []


def _strict_json(text: str):
    def bad(c):
        raise ValueError(f"not JSON: {c}")

    return json.loads(text, parse_constant=bad)


# ------------------------------------------------------------------ timing window and summary


def test_steady_state_excludes_warmup_and_compiling_steps():
    df = pd.DataFrame({
        "step": range(8), "compiled": [1, 0, 1, 0, 0, 0, 1, 0],
        "assembly_ms": [1.0] * 8, "update_ms": [900.0, 500.0, 800.0, 9.0, 9.0, 9.0, 700.0, 9.0],
        "real_graphs": [5] * 8, "wait_ms": [0.0] * 8,
    })
    df["combined_ms"] = df["assembly_ms"] + df["update_ms"]
    s = summarise_steps(df, warmup_steps=2)  # steps 0-1 are warm-up; 0, 2 and 6 compiled
    assert s["steady_steps"] == 4 and s["compiled_steps"] == 3
    assert s["combined_ms_median"] == s["combined_ms_mean"] == 10.0 and s["combined_ms_p90"] == 10.0
    assert s["graphs_per_s"] == pytest.approx(20 / 0.040)
    assert s["compiled_ms_total"] == pytest.approx(901 + 801 + 701)


def _run_tiny(tmp_path, name, *overrides, **kw):
    cfg = load_config(SMOKE, [*TINY, *overrides])
    out = tmp_path / name
    return run(cfg, out_dir=str(out), verbose=False, **kw), out


def test_summary_is_what_a_reviewer_computes_from_the_records(tmp_path):
    """static-64 on crystals: several compiled shapes, so warm-up/compile exclusion matters."""
    s, out = _run_tiny(tmp_path, "r", "batching.method=static-64", "train.num_train_steps=10", "train.warmup_steps=2")
    steps = pd.read_csv(out / "steps.csv")
    data = json.loads((out / "data.json").read_text())
    first_use = ~steps.duplicated(["n_node", "n_edge", "n_graph"])
    steady = steps[(steps["step"] >= 2) & (steps["compiled"] == 0) & ~first_use]
    assert s["steady_steps"] == len(steady) and len(steady) < len(steps)
    assert (first_use == (steps["compiled"] > 0)).all()  # compiled on first use: the same steps
    assert s["combined_ms_median"] == pytest.approx(steady["combined_ms"].median())
    assert s["graphs_per_s"] == pytest.approx(steady["real_graphs"].sum() / steady["combined_ms"].sum() * 1e3)
    assert s["epoch_time_s"] == pytest.approx(data["n_train"] / s["graphs_per_s"])
    # including compilation: every step, compiling ones included
    assert s["train_wall_s"] == pytest.approx(steps["combined_ms"].sum() / 1e3)
    assert s["ms_per_step_incl_compile"] == pytest.approx(steps["combined_ms"].mean())
    assert s["graphs_per_s_incl_compile"] == pytest.approx(steps["real_graphs"].sum() / s["train_wall_s"])
    assert s["epoch_time_s_incl_compile"] == pytest.approx(data["n_train"] / s["graphs_per_s_incl_compile"])
    assert s["graphs_per_s_incl_compile"] < s["graphs_per_s"]  # compiling steps cost time
    assert "steady" in s["epoch_time_basis"]
    evals = pd.read_csv(out / "evals.csv")  # time-to-accuracy: training time when each eval ran
    cum = steps["combined_ms"].cumsum().to_numpy() / 1e3
    np.testing.assert_allclose(evals["train_wall_s"], cum[evals["step"].to_numpy() - 1], rtol=1e-9)
    # fill and compile counts
    assert s["node_fill"] == pytest.approx(steps["real_nodes"].sum() / steps["n_node"].sum())
    assert s["edge_fill"] == pytest.approx(steps["real_edges"].sum() / steps["n_edge"].sum())
    shapes = steps[["n_node", "n_edge", "n_graph"]].drop_duplicates()
    assert s["train_step_compiles"] == steps["compiled"].sum() == len(shapes) == s["distinct_train_shapes"]
    assert s["compiles_in_timed_window"] == steps.loc[steps["step"] >= 2, "compiled"].sum()
    # evaluation compiles are their own: one per distinct eval shape, never in the train count
    ds = load_dataset(load_config(SMOKE, TINY).dataset, verbose=False)
    _, _, evals = make_loaders(BatchingConfig(method="static-64", batch_size=16), ds.store, ds.targets(), ds.splits)
    eval_shapes = {tuple(x) for sp in ("val", "test") for x in evals[sp].plan(0).shapes.tolist()}
    train_shapes = {tuple(x) for x in shapes.to_numpy().tolist()}
    assert s["eval_step_compiles"] == len(eval_shapes) and not eval_shapes <= train_shapes
    assert (s["val_graphs"], s["test_graphs"]) == (data["n_val"], data["n_test"])
    assert json.loads((out / "status.json").read_text())["status"] == "complete"


def test_seed_changes_data_order_and_repeats_reproduce_it(tmp_path):
    _, a = _run_tiny(tmp_path, "a", "train.seed=0", "batching.method=dynamic")
    _, b = _run_tiny(tmp_path, "b", "train.seed=1", "batching.method=dynamic")
    _, c = _run_tiny(tmp_path, "c", "train.seed=0", "batching.method=dynamic")
    nodes = [pd.read_csv(d / "steps.csv")["real_nodes"].tolist() for d in (a, b, c)]
    assert nodes[0] != nodes[1] and nodes[0] == nodes[2]
    losses = [pd.read_csv(d / "steps.csv")["loss"].tolist() for d in (a, c)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_target_statistics_come_from_the_training_split_only():
    ds = load_dataset(DatasetSpec(name="aflow-synthetic", limit=60), verbose=False)
    y = ds.targets()
    assert ds.stats.mean == pytest.approx(np.mean(y[ds.splits.train]))
    assert ds.stats.std == pytest.approx(np.std(y[ds.splits.train]))
    assert abs(ds.stats.mean - np.mean(y)) > 1e-9  # all graphs would give another value


# ------------------------------------------------------------------ evaluation never skips


def _policies():
    for method in METHOD_NAMES:
        if method != "dynamic":
            yield method_config(method, batch_size=5)
            continue
        for budget in ("full", "paper", "fit-or-skip", "percentile"):
            for oversize in ("error", "skip"):
                for skip_overflow in (False, True):
                    yield BatchingConfig(method=method, batch_size=5, budget=budget, oversize=oversize,
                                         skip_overflow=skip_overflow, percentile=50.0, success_ratio=0.5)


@pytest.mark.parametrize("cfg", list(_policies()), ids=lambda c: f"{c.method}-{c.budget}-{c.oversize}-"
                                                                  f"{c.skip_overflow}")
def test_evaluation_covers_every_graph_for_every_method_and_policy(cfg):
    rng = np.random.default_rng(5)
    # a heavy tail after the first 1000 training graphs: the study's 'paper' budget misses it
    n = np.concatenate([rng.integers(2, 8, 2000), rng.integers(70, 90, 40)])
    store = random_store(rng, n, n * 3)
    splits = make_splits(len(n), (0.8, 0.1, 0.1), 0)
    try:
        _, _, evals = make_loaders(cfg, store, store.targets["y"], splits, seed=0)
    except OversizeGraphError:
        assert cfg.budget == "paper" and cfg.oversize == "error"
        return
    for name, loader in evals.items():
        seen = np.concatenate([loader.plan(0).batch(b) for b in range(len(loader.plan(0)))])
        assert sorted(seen.tolist()) == sorted(splits.get(name).tolist()), name
        assert len(loader.plan(0).skipped) == 0


def test_run_with_a_skipping_policy_still_scores_every_eval_graph(tmp_path):
    s, _ = _run_tiny(tmp_path, "skip", "batching.method=dynamic", "batching.budget=fit-or-skip",
                     "batching.skip_overflow=true", "batching.success_ratio=0.3", "dataset.limit=120",
                     "dataset.split=[0.5, 0.25, 0.25]")
    data = json.loads((tmp_path / "skip" / "data.json").read_text())
    assert s["skipped_per_epoch"] > 0  # training did skip
    assert (s["val_graphs"], s["test_graphs"]) == (data["n_val"], data["n_test"])


# ------------------------------------------------------------------ results never pool settings


def _fake_sweep(tmp_path, rows: list[dict], grid: dict) -> str:
    """A sweep directory with hand-written run records (no training)."""
    d = tmp_path / "sweep"
    (d / "runs").mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps({"name": "t", "grid": grid, "base": {}}))
    for i, r in enumerate(rows):
        run_dir = d / "runs" / f"c{i}"
        run_dir.mkdir()
        cfg = {"dataset": {"name": "qm9"}, "model": {"name": "schnet"},
               "batching": {"method": r["method"], "batch_size": 16, "pad_edges": r.get("pad_edges", "hub")},
               "train": {"seed": r["seed"]}}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
        summary = {"dataset": "qm9", "model": "schnet", "batch_size": 16, "synthetic": False, "steps": 100,
                   "unit": "eV", "device_kind": "cpu", "cpu_model": "x", "node_fill": 0.5, "edge_fill": 0.5,
                   "graph_fill": 1.0, "real_graphs_per_batch_mean": 10.0, "combined_ms_median": 1.0,
                   "combined_ms_mean": 1.0, "assembly_ms_median": 0.1, "update_ms_median": 0.9,
                   "graphs_seen": 1000, "eval_step_compiles": 1, "compile_seconds": 1.0,
                   "train_compile_seconds": 1.0, "test_mae": 1.0, **r}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return str(d)


def test_results_group_by_every_grid_axis_but_the_seed(tmp_path):
    from gnn_batching.sweep.results import collect, comparison

    rows = []
    for pad, gps in (("hub", 100.0), ("spread", 200.0)):
        for seed in (0, 1, 2):
            rows.append({"method": "dynamic", "pad_edges": pad, "seed": seed, "graphs_per_s": gps + seed,
                         "graphs_per_s_incl_compile": gps / 2, "train_wall_s": 10.0, "train_step_compiles": 1,
                         "test_rmse": 1.0 + seed})
    sweep = _fake_sweep(tmp_path, rows, {"batching.pad_edges": ["hub", "spread"], "train.seed": [0, 1, 2]})
    agg = comparison(collect(sweep, write=True))
    assert len(agg) == 2 and set(agg["axis:batching.pad_edges"]) == {"hub", "spread"}
    assert (agg["n_seeds"] == 3).all() and (agg["n_runs"] == 3).all()
    assert sorted(agg["graphs_per_s_mean"]) == [101.0, 201.0]
    table = pd.read_csv(os.path.join(sweep, "comparison.csv"))
    assert "batching.pad_edges" in table.columns and len(table) == 2 and (table["n_seeds"] == 3).all()


def test_speedups_and_break_even_from_the_raw_records(tmp_path):
    from gnn_batching.sweep.results import collect, comparison

    # fast: 1000 graphs/s steady but 30 s of compiling; slow: 500 graphs/s steady, 2 s overhead.
    # per graph 1 ms vs 2 ms, extra overhead 28 s -> 28,000 graphs -> 2,800 steps of 10 graphs
    rows = []
    for seed in (0, 1):
        rows.append({"method": "static-64", "seed": seed, "graphs_per_s": 1000.0, "train_step_compiles": 40,
                     "train_wall_s": 1.0 + 30.0, "graphs_per_s_incl_compile": 1000 / 31.0, "test_rmse": 1.0})
        rows.append({"method": "dynamic", "seed": seed, "graphs_per_s": 500.0, "train_step_compiles": 1,
                     "train_wall_s": 2.0 + 2.0, "graphs_per_s_incl_compile": 1000 / 4.0, "test_rmse": 1.0})
        rows.append({"method": "static-pow2", "seed": seed, "graphs_per_s": 400.0, "train_step_compiles": 3,
                     "train_wall_s": 2.5 + 3.0, "graphs_per_s_incl_compile": 1000 / 5.5, "test_rmse": 1.0})
    agg = comparison(collect(_fake_sweep(tmp_path, rows, {"batching.method": [], "train.seed": [0, 1]})))
    agg = agg.set_index("method")
    assert agg.loc["static-64", "speedup_steady"] == pytest.approx(2.5)
    assert agg.loc["dynamic", "speedup_incl_compile"] == pytest.approx((1000 / 4.0) / (1000 / 31.0))
    assert agg.loc["static-64", "speedup_incl_compile"] == pytest.approx(1.0)
    assert agg.loc["static-64", "break_even_steps"] == "2800"
    assert agg.loc["static-pow2", "break_even_steps"] == "never"  # compiles more, not faster
    assert agg.loc["dynamic", "break_even_ref"] == "(reference)" and agg.loc["static-64", "break_even_ref"] == "dynamic"


def test_welch_on_two_constant_groups_is_not_testable():
    from gnn_batching.sweep.significance import pairwise_tests

    rows = [{"dataset": "d", "model": "m", "batch_size": 8, "method": m, "seed": s, "test_rmse": v}
            for m, v in (("a", 1.0), ("b", 2.0)) for s in range(3)]
    t = pairwise_tests(pd.DataFrame(rows))
    assert math.isnan(t["welch_p"].iloc[0]) and math.isnan(t["welch_p_holm"].iloc[0])


# ------------------------------------------------------------------ validation before any work


def _bad_cli(tmp_path, capsys, argv) -> str:
    out = tmp_path / "out"
    code = main([*argv[:1], *argv[1:], *(["--out", str(out)] if argv[0] == "run" else [])])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "\nerror: " in "\n" + err
    assert not out.exists() or not os.listdir(out)
    return err


@pytest.mark.parametrize("override, key", [
    ("dataset.split=[0.8, 0.2]", "dataset.split"),
    ("dataset.split=[a, b, c]", "dataset.split"),
    ("dataset.split=[0.5, 0.2, 0.2]", "dataset.split"),
    ("dataset.split=[1.0, 0.0, 0.0]", "dataset.split"),
    ("dataset.limit=0", "dataset.limit"),
    ("dataset.limit=-5", "dataset.limit"),
    ("train.seed=-1", "train.seed"),
    ("dataset.split_seed=-2", "dataset.split_seed"),
    ("batching.percentile=0", "batching.percentile"),
    ("batching.percentile=150", "batching.percentile"),
    ("dataset.source=/no/such/file.csv", "dataset.source"),
])
def test_bad_config_exits_2_naming_the_key_and_writes_nothing(tmp_path, capsys, override, key):
    err = _bad_cli(tmp_path, capsys, ["run", SMOKE, "--set", override])
    assert key in err


def test_an_empty_eval_split_is_refused_before_any_output(tmp_path, capsys):
    err = _bad_cli(tmp_path, capsys, ["run", SMOKE, "--set", "dataset.name=aflow-synthetic", "--set",
                                      "dataset.limit=30", "--set", "dataset.split=[28, 2, -1]"])
    assert "test split" in err and "empty" in err


def test_unreadable_config_paths(tmp_path, capsys):
    err = _bad_cli(tmp_path, capsys, ["run", str(tmp_path)])
    assert "is a directory" in err
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    err = _bad_cli(tmp_path, capsys, ["run", str(p)])
    assert "latin1.yaml: not a UTF-8" in err


def test_bench_arguments_are_checked(tmp_path, capsys):
    assert main(["bench", "batching", "--dataset", "aflow-synthetic", "--limit", "30", "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
    assert main(["bench", "batching", "--dataset", "qm9", "--source", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err


def test_a_run_never_overwrites_files_it_did_not_create(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my own notes\n")
    code = main(["run", SMOKE, "--out", str(out), *SET_TINY])
    err = capsys.readouterr().err
    assert code == 2 and "--force" in err and "--resume" in err  # the fix that keeps the partial run
    assert (out / "config.yaml").read_text() == "my own notes\n"
    (out / "notes.txt").write_text("x")
    code = main(["run", SMOKE, "--out", str(out), "--force", *SET_TINY])
    assert code == 2 and "notes.txt" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == "my own notes\n"


def test_run_names_cannot_escape_the_runs_folder():
    cfg = load_config(SMOKE, ["name=../../x"])
    path = default_run_dir(cfg.name)
    assert os.path.dirname(path) == os.path.join("results", "runs") and ".." not in path
    assert os.path.normpath(path).startswith(os.path.join("results", "runs") + os.sep)


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_printed_summary_is_strict_json(tmp_path):
    out = tmp_path / "j"
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", SMOKE, *SET_TINY,
                        "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    printed = _strict_json(r.stdout)
    assert printed["wait_ms_mean"] is None  # no prefetch: NaN in Python, null in JSON
    assert _strict_json((out / "summary.json").read_text())["steps"] == 6


# ------------------------------------------------------------------ smaller defects


def test_interrupted_and_failed_runs_keep_their_records(tmp_path, monkeypatch):
    import gnn_batching.train.run as run_mod

    real = run_mod.steps_for

    def failing_at(n, exc_factory):
        def make_steps(*a, **k):
            train_step, eval_step = real(*a, **k)
            calls = {"n": 0}

            def step(*args):
                calls["n"] += 1
                if calls["n"] > n:
                    raise exc_factory()
                return train_step(*args)

            step._cache_size = train_step._cache_size
            return step, eval_step

        return make_steps

    monkeypatch.setattr(run_mod, "steps_for", failing_at(4, KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        _run_tiny(tmp_path, "int")
    out = tmp_path / "int"
    assert len(pd.read_csv(out / "steps.csv")) == 4 and not (out / "summary.json").exists()
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "interrupted" and st["steps_done"] == 4
    assert len(pd.read_csv(out / "evals.csv")) == 2  # the evaluation at step 3 was kept

    def nan_step(*a, **k):
        train_step, eval_step = real(*a, **k)

        def step(state, batch):
            state, m = train_step(state, batch)
            return state, {"loss": m["loss"] * jnp.nan}

        step._cache_size = train_step._cache_size
        return step, eval_step

    monkeypatch.setattr(run_mod, "steps_for", nan_step)
    from gnn_batching.errors import UserError

    with pytest.raises(UserError, match="loss became nan"):
        _run_tiny(tmp_path, "nan")
    assert json.loads((tmp_path / "nan" / "status.json").read_text())["status"] == "failed"
    assert len(pd.read_csv(tmp_path / "nan" / "steps.csv")) == 1


def test_padding_predictions_that_overflow_never_poison_the_loss():
    pred = jnp.array([1.0, jnp.inf, -jnp.inf])
    mask = jnp.array([True, False, False])
    assert float(masked_mse(pred, jnp.array([3.0, 0.0, 0.0]), mask)) == 4.0


def test_registered_dataset_cache_is_keyed_on_limit_and_module_source(tmp_path, monkeypatch):
    from gnn_batching.data.datasets import cache_key

    mod = tmp_path / "my_limited.py"
    mod.write_text(
        "from ase import Atoms\nfrom gnn_batching import register_dataset\n\n"
        "@register_dataset('limited-chains')\n"
        "def chains(limit=None, seed=0, **_):\n"
        "    out = []\n"
        "    for i in range(limit or 20):\n"
        "        a = Atoms('H' * (2 + i % 3), positions=[[k * 0.9, 0, 0] for k in range(2 + i % 3)])\n"
        "        a.info = {'y': float(i)}\n"
        "        out.append(a)\n"
        "    return out\n")
    monkeypatch.chdir(tmp_path)
    small = load_dataset(DatasetSpec(name="limited-chains", module="my_limited", limit=5), verbose=False)
    full = load_dataset(DatasetSpec(name="limited-chains", module="my_limited"), verbose=False)
    assert len(small.store) == 5 and len(full.store) == 20
    before = cache_key(DatasetSpec(name="limited-chains", module="my_limited"))
    mod.write_text(mod.read_text().replace("0.9", "0.95"))
    assert cache_key(DatasetSpec(name="limited-chains", module="my_limited")) != before


def test_child_processes_get_only_valid_xla_flags(monkeypatch):
    from gnn_batching.sweep.launch import _child_env

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    for jobs in (1, 2):
        env = _child_env(threads=1, jobs=jobs)
        assert all(tok.startswith("--") for tok in env.get("XLA_FLAGS", "").split())
        assert env["GNN_BATCHING_JOBS"] == str(jobs) and env["OMP_NUM_THREADS"] == "1"


def test_split_sizes_never_leave_a_positive_share_empty():
    sp = make_splits(6, (0.8, 0.1, 0.1), 0)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (4, 1, 1)
    sp = make_splits(1000, (0.8, 0.1, 0.1), 0)  # unchanged for real sizes
    assert (len(sp.train), len(sp.val), len(sp.test)) == (800, 100, 100)
    with pytest.raises(ConfigError, match="training split"):
        make_splits(2, (0.4, 0.3, 0.3), 0)


def test_the_verdict_states_the_winners_the_break_even_and_the_significance(tmp_path):
    """Generated from the numbers: steady winner, winner incl. compilation, when the order changes,
    and whether test error differs (Holm-corrected Welch)."""
    from gnn_batching.sweep.results import collect
    from gnn_batching.sweep.verdict import verdict

    rows = []
    for seed in (0, 1, 2):
        # static-64: fastest steps, many compiles (slow incl. compile); dynamic: one compile
        rows.append({"method": "static-64", "seed": seed, "graphs_per_s": 1000.0 + seed, "train_step_compiles": 30,
                     "train_wall_s": 60.0, "graphs_per_s_incl_compile": 100.0, "test_rmse": 1.0 + 0.01 * seed})
        rows.append({"method": "dynamic", "seed": seed, "graphs_per_s": 800.0 + seed, "train_step_compiles": 1,
                     "train_wall_s": 12.5, "graphs_per_s_incl_compile": 480.0, "test_rmse": 2.0 + 0.01 * seed})
    df = collect(_fake_sweep(tmp_path, rows, {"batching.method": [], "train.seed": [0, 1, 2]}), write=False)
    (line,) = verdict(df)
    assert "steady state: static-64 1.25x faster than dynamic [1.25, 1.25], 3 processes (1001 graphs/s)" in line, line
    assert "including compilation over 100 steps: dynamic 4.80x faster than static-64 [4.80, 4.80], 3 processes" \
        in line
    from gnn_batching.sweep.results import comparison

    steps = comparison(df).set_index("method").loc["static-64", "break_even_steps"]
    assert steps.isdigit() and f"after about {int(steps):,} steps [" in line
    assert "test RMSE differs: static-64 lower than dynamic" in line
    assert "for longer runs it is the faster choice" in line
    # the same means, but static-64's steady figures spread over 600-1400: its lead may be noise,
    # so the break-even is stated and no choice for longer runs is drawn from it
    noisy = [dict(r, graphs_per_s=(600.0, 1000.0, 1400.0)[r["seed"]]) if r["method"] == "static-64" else r
             for r in rows]
    (line,) = verdict(collect(_fake_sweep(tmp_path / "noisy", noisy, {"batching.method": [], "train.seed": [0, 1, 2]}),
                              write=False))
    assert "no difference beyond noise between static-64 and dynamic" in line, line
    assert "but its steady lead over dynamic is within noise [" in line and "no choice for longer runs follows" \
        in line and "faster choice" not in line, line
    one_seed = collect(_fake_sweep(tmp_path / "one", [r for r in rows if r["seed"] == 0],
                                   {"batching.method": [], "train.seed": [0]}), write=False)
    assert "not testable with one seed" in verdict(one_seed)[0]


def test_a_slow_process_is_counted_named_in_the_verdict_and_kept_in_the_figures(tmp_path):
    """One process of three 1.3x slower than its siblings for its whole life (a slow stretch of the
    machine): the table says '3 (1 slow)', the verdict names it, and its figure stays in the mean."""
    from gnn_batching.sweep import intervals as iv
    from gnn_batching.sweep.results import COMPARISON_NOTE, collect, comparison, format_comparison
    from gnn_batching.sweep.verdict import verdict

    rows = [{"method": m, "seed": seed, "graphs_per_s": rate, "train_step_compiles": 1, "train_wall_s": 10.0,
             "graphs_per_s_incl_compile": rate / 2, "test_rmse": 1.0}
            for m, rates in (("dynamic", (1000.0, 990.0, 1000.0 / 1.3)), ("static-64", (500.0, 490.0, 480.0)))
            for seed, rate in enumerate(rates)]
    df = collect(_fake_sweep(tmp_path, rows, {"batching.method": [], "train.seed": [0, 1, 2]}), write=False)
    agg = comparison(df).set_index("method")
    assert agg["slow_processes"].to_dict() == {"dynamic": 1, "static-64": 0}  # 480 is 1.04x below 500: not slow
    assert agg.loc["dynamic", "graphs_per_s_mean"] == pytest.approx((1990.0 + 1000.0 / 1.3) / 3)
    (line,) = verdict(df)
    assert f"slow processes (steady more than {iv.SLOW_PROCESS:.2f}x slower than their group's fastest" in line
    assert "dynamic 1 of 3" in line and "static-64 0" not in line
    assert "3 (1 slow)" in format_comparison(df) and f"{iv.SLOW_PROCESS:.2f}x slower" in COMPARISON_NOTE
    (fine,) = verdict(df[~((df["method"] == "dynamic") & (df["seed"] == 2))])
    assert "slow processes" not in fine
    (alone,) = verdict(df[df["method"] == "dynamic"])  # one method: nothing to compare, still named
    assert "one method only (dynamic); nothing to compare; slow processes" in alone and "dynamic 1 of 3" in alone
    nan = df.copy()
    nan.loc[(nan["method"] == "static-64") & (nan["seed"] == 0), "graphs_per_s"] = np.nan  # no figure: not counted
    nan.loc[(nan["method"] == "static-64") & (nan["seed"] == 1), "graphs_per_s"] = 300.0
    assert comparison(nan).set_index("method").loc["static-64", "slow_processes"] == 1


def test_collect_reads_without_writing_unless_asked(tmp_path):
    from gnn_batching.sweep.results import collect

    rows = [{"method": m, "seed": 0, "graphs_per_s": 10.0, "train_step_compiles": 1, "train_wall_s": 1.0,
             "graphs_per_s_incl_compile": 5.0, "test_rmse": 1.0} for m in ("dynamic", "static-64")]
    sweep = _fake_sweep(tmp_path, rows, {"batching.method": [], "train.seed": [0]})
    before = sorted(os.listdir(sweep))
    collect(sweep)
    assert sorted(os.listdir(sweep)) == before  # a read in a notebook has no side effect
    collect(sweep, write=True)
    assert {"results.csv", "comparison.csv"} <= set(os.listdir(sweep))
