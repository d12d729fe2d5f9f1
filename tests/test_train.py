"""Models and runs: parameter counts, padding never leaks, compile counting, full-split
evaluation, strict config validation, and the smoke run through the real CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
import yaml
from conftest import random_store

from gnn_batching.batching import BatchingConfig, assemble, make_method
from gnn_batching.config import config_from_dict, load_config
from gnn_batching.data.store import TargetStats
from gnn_batching.errors import ConfigError
from gnn_batching.models import ModelConfig, make_model
from gnn_batching.train.instruments import CompileMonitor
from gnn_batching.train.steps import count_params, init_state, make_loss, make_optimizer, make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batches(store, idx, shapes, pad_edges="hub"):
    return [assemble(store, idx, s, store.targets["y"], pad_edges) for s in shapes]


@pytest.mark.parametrize("name, expected", [("mpeu", 173_152), ("schnet", 80_352)])
def test_parameter_counts_match_the_study(name, expected):
    store = random_store(np.random.default_rng(0), [4, 5], [6, 7], n_species=5)
    b = _batches(store, np.arange(2), [(10, 13, 3)])[0]
    params = make_model(ModelConfig(name=name), 5).init(jax.random.PRNGKey(0), b.graph)
    assert count_params(params) == expected


@pytest.mark.parametrize("name", [pytest.param("mpeu", marks=pytest.mark.slow), "schnet", "painn"])
def test_padding_never_leaks_into_loss_or_gradients(name):
    """The loss and gradients of padded batches equal those of the same graphs unpadded."""
    rng = np.random.default_rng(1)
    store = random_store(rng, [3, 6, 1, 5], [4, 12, 0, 9], n_species=5)
    idx = np.arange(4)
    model = make_model(ModelConfig(name=name, latent_size=16 if name == "painn" else None), 5)
    loss_fn = make_loss(model, TargetStats(0.3, 2.0))
    # unpadded: jraph's own batch of the four graphs, every graph real
    singles = []
    for i in idx:
        a, b = store.node_offsets[i], store.node_offsets[i + 1]
        c, d = store.edge_offsets[i], store.edge_offsets[i + 1]
        singles.append(jraph.GraphsTuple(nodes=store.species[a:b], edges=store.edges[c:d],
                                         senders=store.senders[c:d].astype(np.int32),
                                         receivers=store.receivers[c:d].astype(np.int32),
                                         n_node=np.array([b - a], np.int32), n_edge=np.array([d - c], np.int32),
                                         globals=None))
    plain = jraph.batch_np(singles)
    targets = store.targets["y"][idx].astype(np.float32)
    params = model.init(jax.random.PRNGKey(0), plain)
    grad_fn = jax.jit(jax.value_and_grad(loss_fn))  # compiled per shape: faster than op by op here
    ref_loss, ref_grads = grad_fn(params, plain, targets, np.ones(4, bool))
    for pad_edges in ("hub", "spread"):
        for shape in [(16, 25, 5), (64, 128, 9)]:
            b = _batches(store, idx, [shape], pad_edges)[0]
            loss, grads = grad_fn(params, b.graph, b.targets, b.graph_mask)
            np.testing.assert_allclose(loss, ref_loss, rtol=2e-5)
            for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
                np.testing.assert_allclose(g, r, rtol=2e-4, atol=1e-6)


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
@pytest.mark.lowest  # also against the lowest allowed versions (.ci/run)
def test_compile_counting_static_exact_vs_dynamic():
    rng = np.random.default_rng(2)
    store = random_store(rng, rng.integers(2, 9, 60), rng.integers(0, 20, 60), n_species=5)
    model = make_model(ModelConfig(name="schnet", latent_size=8), 5)
    tx = make_optimizer(1e-3, 100, 0.9, True)
    counts = {}
    for method in ("static-exact", "dynamic"):
        train_step, _ = make_steps(model, TargetStats(0.0, 1.0))
        m = make_method(BatchingConfig(method=method, batch_size=6), store, np.arange(60))
        plan = m.plan(np.arange(60))
        mon = CompileMonitor()
        state = None
        for bi in range(len(plan)):
            b = assemble(store, plan.batch(bi), tuple(plan.shapes[bi]), store.targets["y"])
            state = state or init_state(model, tx, b.graph, 0)
            with mon.track("train", train_step):
                state, _ = train_step(state, b.arrays)
        mon.close()
        counts[method] = (mon.counts["train"], mon.seconds.get("train", 0.0),
                          len({tuple(s) for s in plan.shapes.tolist()}))
    assert counts["dynamic"][0] == 1
    assert counts["static-exact"][0] == counts["static-exact"][2] > 1  # one compile per distinct shape
    assert counts["static-exact"][1] > counts["dynamic"][1] > 0


def test_config_validation_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dataset:\n  name: qm9\n  limt: 10\n")
    with pytest.raises(ConfigError, match=r"c.yaml: dataset.limt: unknown key"):
        load_config(str(p))
    p.write_text("train:\n  num_train_steps: lots\n")
    with pytest.raises(ConfigError, match=r"train.num_train_steps: expected an integer"):
        load_config(str(p))
    p.write_text("batching:\n  method: static-pow3\n")
    with pytest.raises(ConfigError, match="static-pow2, static-64"):
        load_config(str(p))
    p.write_text("modle: {}\n")
    with pytest.raises(ConfigError, match="modle: unknown key"):
        load_config(str(p))
    p.write_text("name: x\n")
    cfg = load_config(str(p), ["batching.method=dynamic", "batching.batch_size=64", "train.num_train_steps=200",
                               "dataset.limit=2000", "model.name=schnet", "dataset.name=qm9", "train.seed=3",
                               "train.eval_every=100", "dataset.split=[0.5, 0.25, 0.25]"])
    assert (cfg.batching.batch_size, cfg.train.num_train_steps, cfg.dataset.limit, cfg.train.seed) == (64, 200, 2000, 3)
    assert cfg.dataset.split == (0.5, 0.25, 0.25)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(str(p), ["batching.batch_size"])
    with pytest.raises(ConfigError, match="train.lr must be > 0"):
        config_from_dict({"train": {"lr": -1}})


def test_an_invalid_value_is_blamed_where_it_was_given(tmp_path, capsys):
    """A bad value given with --set is named as that --set, never as the file the user did not
    touch; a bad value in a file names the file and the key; a sweep's set: names its entry."""
    from gnn_batching.cli import main
    from gnn_batching.sweep.grid import load_sweep

    smoke = os.path.join(ROOT, "configs", "smoke.yaml")
    assert main(["run", smoke, "--set", "batching.batch_size=-4", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err == "error: --set batching.batch_size=-4: batching.batch_size must be >= 2 (it counts the padding " \
                  "graph), got -4\n"
    assert not (tmp_path / "x").exists()
    # the last --set of a key is the one in force; a cross-key rule names the --set that broke it
    with pytest.raises(ConfigError, match=r"^--set batching\.batch_size=1: batching\.batch_size must be >= 2"):
        load_config(smoke, ["batching.batch_size=8", "batching.batch_size=1"])
    with pytest.raises(ConfigError, match=r"^--set train\.num_train_steps=2: train\.warmup_steps \(5\) must be <"):
        load_config(smoke, ["train.warmup_steps=5", "train.num_train_steps=2"])
    with pytest.raises(ConfigError, match=r"^--set model\.latent_size=0: model\.latent_size must be >= 1"):
        load_config(smoke, ["model.latent_size=0"])
    p = tmp_path / "c.yaml"
    p.write_text("batching:\n  batch_size: -4\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(p))}: batching\.batch_size must be >= 2"):
        load_config(str(p), ["train.seed=1"])  # an unrelated --set does not take the blame
    load_config(str(p), ["batching.batch_size=8"])  # the --set wins over the file: nothing to blame
    sweep = {"name": "s", "output_dir": str(tmp_path / "out"), "base": {"dataset": {"name": "aflow-synthetic"}},
             "grid": {"train.seed": [0]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep))
    with pytest.raises(ConfigError, match=r"^--set batching\.batch_size=-4: batching\.batch_size must be >= 2"):
        load_sweep(str(tmp_path / "s.yaml"), ["batching.batch_size=-4"])
    with pytest.raises(ConfigError, match=r"^--set grid\.batching\.batch_size=\[1, 8\]: batching\.batch_size"):
        load_sweep(str(tmp_path / "s.yaml"), ["grid.batching.batch_size=[1, 8]"])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**sweep, "set": {"batching.batch_size": 1}}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 's.yaml'))}: set\.batching\.batch_size: "):
        load_sweep(str(tmp_path / "s.yaml"))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**sweep, "base": {"batching": {"batch_size": 1}}}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 's.yaml'))} \(base\): batching\.batch_size"):
        load_sweep(str(tmp_path / "s.yaml"))


def _smoke_overrides(out):
    return ["--set", "dataset.name=aflow-synthetic", "--set", "dataset.limit=80", "--set", "train.num_train_steps=12",
            "--set", "train.eval_every=6", "--set", "model.latent_size=8", "--out", str(out)]


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_smoke_run_through_cli(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", os.path.join(ROOT, "configs/smoke.yaml"),
                        *_smoke_overrides(out), "--set", "batching.method=static-64"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    for key in ("dataset", "model", "method", "batch_size", "seed", "steps", "n_params", "real_graphs_per_batch_mean",
                "assembly_ms_median", "update_ms_median", "combined_ms_median", "assembly_ms_mean", "update_ms_mean",
                "combined_ms_mean", "first_step_ms", "train_step_compiles", "eval_step_compiles", "compile_seconds",
                "compiles_in_timed_window", "graphs_per_s", "node_fill", "edge_fill", "graph_fill", "val_rmse",
                "val_mae", "test_rmse", "test_mae", "test_graphs"):
        assert key in s, key
    assert s["synthetic"] is True and s["method"] == "static-64"
    assert s["test_graphs"] == 8 and s["val_graphs"] == 8  # every graph of each split, exactly once
    assert s["train_step_compiles"] >= 1 and s["compile_seconds"] > 0
    for f in ("config.yaml", "provenance.json", "steps.csv", "evals.csv", "data.json", "epochs.csv"):
        assert (out / f).exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["jax_backend"] and prov["packages"]["jax"] and prov["cpu_count"]
    assert prov["jax_environment"].startswith("jax:") and prov["allocator"]
    assert s["git_commit"] == prov["git_commit"] and s["git_dirty"] == prov["git_dirty"]  # the row names its code
    import pandas as pd

    steps = pd.read_csv(out / "steps.csv")
    assert len(steps) == 12 and (steps["assembly_ms"] > 0).all()
    # 64 training graphs in static batches of bs - 1 = 15: 15, 15, 15, 15, 4 (the last one kept)
    assert steps["real_graphs"].tolist()[:5] == [15, 15, 15, 15, 4]
    assert s["real_graphs_per_batch_mean"] == pytest.approx(steps["real_graphs"].mean())
    evals = pd.read_csv(out / "evals.csv")
    assert evals["step"].tolist() == [6, 6, 12, 12]
    # a finished run directory is never overwritten
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", os.path.join(ROOT, "configs/smoke.yaml"),
                        *_smoke_overrides(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "already holds a finished run" in r.stderr and "Traceback" not in r.stderr


def test_bad_override_fails_before_any_work(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", os.path.join(ROOT, "configs/smoke.yaml"),
                        "--set", "batching.batch_sise=3", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "--set batching.batch_sise: unknown key in batching" in r.stderr
    assert "smoke.yaml" not in r.stderr  # the override is wrong, not the file
    assert not (tmp_path / "x").exists()
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", os.path.join(ROOT, "configs/quickstart.yaml")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "this is a sweep file" in r.stderr and "gnn-batching sweep" in r.stderr


def test_prefetch_run_records_wait(tmp_path):
    from gnn_batching.train.run import run

    cfg = load_config(os.path.join(ROOT, "configs/smoke.yaml"),
                      ["dataset.name=aflow-synthetic", "dataset.limit=60", "train.num_train_steps=6", "model.latent_size=8",
                       "batching.prefetch=2", "model.name=mpeu"])
    s = run(cfg, out_dir=str(tmp_path / "p"), verbose=False)
    assert s["prefetch"] == 2 and s["wait_ms_mean"] >= 0 and np.isfinite(s["test_rmse"])
    # the host->device copy happened ahead, in the prefetch thread, and is reported apart
    assert s["transfer_ms_mean"] > 0 and 0 <= s["wait_fraction"] < 1
    import pandas as pd

    steps = pd.read_csv(tmp_path / "p" / "steps.csv")
    assert (steps["transfer_ms"] > 0).all() and steps["wait_ms"].notna().all()


def test_eval_weighted_by_real_graphs():
    """Eval sums errors over real graphs only, whatever the padding."""
    store = random_store(np.random.default_rng(3), [3, 4, 5], [2, 3, 4], n_species=5)
    model = make_model(ModelConfig(name="schnet", latent_size=8), 5)
    tx = make_optimizer(1e-3, 10, 0.9, True)
    _, eval_step = make_steps(model, TargetStats(1.0, 2.0))
    b1, b2 = _batches(store, np.arange(3), [(13, 9, 4), (40, 50, 10)])
    state = init_state(model, tx, b1.graph, 0)
    o1, o2 = eval_step(state, b1.arrays), eval_step(state, b2.arrays)
    assert float(o1["n"]) == float(o2["n"]) == 3
    np.testing.assert_allclose(float(o1["sse"]), float(o2["sse"]), rtol=1e-5)
    assert jnp.isfinite(o1["sae"])


def test_compile_counting_never_silently_reads_zero(monkeypatch):
    from gnn_batching.train.instruments import CompileCountError

    f = jax.jit(lambda x: (x * 2.0).sum())

    def opaque(x):  # a callable that hides the jitted function's cache size
        return f(x)

    mon = CompileMonitor()
    try:
        for shape, expected in (((3,), 1), ((3,), 0), ((5,), 1)):
            x = np.ones(shape, np.float32)
            with mon.track("t", opaque) as info:
                jax.block_until_ready(opaque(x))
            assert info["compiled"] == expected  # counted from backend-compile events
        g = jax.jit(lambda x: x + 1.0)
        monkeypatch.setattr(mon, "_on_compile_time", lambda *a, **k: None)  # events lost too
        with pytest.raises(CompileCountError, match="would silently read 0"):
            with mon.track("u", lambda x: g(x)):
                g(np.ones(2, np.float32))
    finally:
        mon.close()


def test_a_full_dispatch_cache_is_counted_by_events_and_emptied_before_a_run(monkeypatch):
    """jax-ml/jax#39078: once JAX's process-wide dispatch cache is full (a long test session or
    notebook), a new jitted function's cache size stays 0 although its calls compile. The first
    call then switches that function to backend-compile events (never CompileCountError, never a
    silent 0), and a run empties the full cache first so its steps keep their fast path."""
    from jax._src import pjit

    from gnn_batching.train import instruments

    f = jax.jit(lambda x: (x * 3.0).sum())

    class Unkept:  # what a jitted function looks like while the dispatch cache is full
        def __call__(self, x):
            return f(x)

        def _cache_size(self):
            return 0

    g, mon = Unkept(), CompileMonitor()
    try:
        for shape, expected in (((4,), 1), ((4,), 0), ((6,), 1)):
            with mon.track("train", g) as info:
                jax.block_until_ready(g(np.ones(shape, np.float32)))
            assert info["compiled"] == expected, shape
        assert mon.counts["train"] == 2 and mon.state()["counted_by_events"] == ["train"]
    finally:
        mon.close()

    class Cache:
        def __init__(self, size):
            self.n = size

        def size(self):
            return self.n

        def capacity(self):
            return 8192

    assert pjit._cpp_pjit_cache_fun_only.capacity() > 0  # what is read exists in this JAX
    monkeypatch.setattr(pjit, "_cpp_pjit_cache_fun_only", Cache(10))
    monkeypatch.setattr(pjit, "_cpp_pjit_cache_explicit_attributes", Cache(8191))
    assert instruments.dispatch_cache_full() is False
    cleared = []
    monkeypatch.setattr(instruments.jax, "clear_caches", lambda: cleared.append(1))
    assert instruments.free_dispatch_cache() is False and not cleared
    monkeypatch.setattr(pjit, "_cpp_pjit_cache_explicit_attributes", Cache(8192))
    assert instruments.dispatch_cache_full() is True
    assert instruments.free_dispatch_cache() is True and cleared == [1]


def test_peak_device_memory_where_the_backend_reports_it(monkeypatch):
    from gnn_batching.train import instruments

    class Dev:
        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

    monkeypatch.setattr(instruments.jax, "devices", lambda: [Dev({"peak_bytes_in_use": 123, "bytes_in_use": 7})])
    assert instruments.peak_device_memory() == 123
    monkeypatch.setattr(instruments.jax, "devices", lambda: [Dev(None)])  # the CPU backend
    assert instruments.peak_device_memory() is None


def test_dataset_cache_defaults_to_the_per_user_cache(monkeypatch, tmp_path):
    from gnn_batching.data.datasets import data_root

    monkeypatch.delenv("GNN_BATCHING_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert data_root() == str(tmp_path / "xdg" / "gnn_batching")
    monkeypatch.setenv("GNN_BATCHING_DATA", "elsewhere")
    assert data_root() == "elsewhere"


def test_train_and_evaluate_returns_the_state_and_saves_final_params(tmp_path):
    import flax.serialization

    from gnn_batching.train.run import train_and_evaluate

    cfg = load_config(os.path.join(ROOT, "configs/smoke.yaml"),
                      ["dataset.name=aflow-synthetic", "dataset.limit=60", "train.num_train_steps=3", "model.latent_size=4"])
    state, summary = train_and_evaluate(cfg, str(tmp_path / "r"), verbose=False)
    assert int(state.step) == 3 and summary["steps"] == 3
    saved = flax.serialization.from_bytes(state.params, (tmp_path / "r" / "params.msgpack").read_bytes())
    for a, b in zip(jax.tree_util.tree_leaves(saved), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(a, b)
    assert summary["n_params"] == count_params(state.params)


def test_run_records_are_snapshotted_as_they_come(tmp_path):
    import pandas as pd

    from gnn_batching.train.records import RunRecords

    rec = RunRecords(str(tmp_path), epoch_stats=[{"epoch": 0}], every_s=0.0)
    rec.step(step=0, loss=1.0)
    assert pd.read_csv(tmp_path / "steps.csv")["loss"].tolist() == [1.0]  # on disk before the run ends
    rec.every_s = 1e9
    rec.step(step=1, loss=0.5)
    assert len(pd.read_csv(tmp_path / "steps.csv")) == 1 and len(rec) == 2
    rec.save()
    assert len(pd.read_csv(tmp_path / "steps.csv")) == 2


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_a_run_killed_with_sigkill_resumes_to_the_same_parameters(tmp_path):
    """Checkpoint every 25 steps, SIGKILL after the first checkpoint, `run --resume`: the same step
    count, the same final parameters and test error as an uninterrupted run; restarts and the
    compiles after them are reported apart. SIGTERM and Ctrl-C stop at a step's end with a
    checkpoint there."""
    import shlex
    import signal
    import time

    import flax.serialization
    import pandas as pd

    smoke = os.path.join(ROOT, "configs", "smoke.yaml")
    args = ["--set", "train.num_train_steps=200", "--set", "train.checkpoint_every=25", "--set", "train.eval_every=100",
            "--set", "batching.method=static-pow2", "--set", "model.latent_size=32"]

    def cmd(out, *extra):
        return [sys.executable, "-m", "gnn_batching.cli", "run", smoke, *args, "--out", str(out), *extra]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (killed / "checkpoints" / "25").is_dir():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoints" / "25").is_dir() and not (killed / "summary.json").exists()
    saved = (killed / "config.yaml").read_text()
    r = subprocess.run(cmd(killed, "--resume", "--set", "batching.batch_size=32"), cwd=tmp_path, capture_output=True,
                       text=True)  # other settings than the run had: refused, nothing touched
    assert r.returncode != 0 and "batching.batch_size" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert (killed / "config.yaml").read_text() == saved
    r = subprocess.run(cmd(killed, "--resume"), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("resuming") == 1 and "from step " in r.stderr, r.stderr[-2000:]  # each line once
    r = subprocess.run(cmd(tmp_path / "straight"), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]

    def params(out):
        return flax.serialization.msgpack_restore((out / "params.msgpack").read_bytes())

    a, b = params(killed), params(tmp_path / "straight")
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    sk = json.loads((killed / "summary.json").read_text())
    ss = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert sk["restarts"] == 1 and ss["restarts"] == 0 and ss["restart_compiles"] == 0
    assert sk["restart_compiles"] >= 1 and sk["train_step_compiles"] == ss["train_step_compiles"]
    assert sk["steps"] == 200 and sk["test_rmse"] == pytest.approx(ss["test_rmse"], rel=1e-5)
    assert sk["graphs_seen"] == ss["graphs_seen"] and ss["checkpoints_saved"] == 7  # at 25, 50, ..., 175
    steps = pd.read_csv(killed / "steps.csv")
    assert steps["step"].tolist() == list(range(200))  # every step once: none lost, none repeated
    assert (steps["real_graphs"].to_numpy() == pd.read_csv(tmp_path / "straight" / "steps.csv")["real_graphs"]).all()
    evals = pd.read_csv(killed / "evals.csv")
    assert sorted(set(evals["step"])) == [100, 200]
    assert sorted(os.listdir(killed / "checkpoints")) == ["150", "175"]  # the last train.checkpoint_keep

    # SIGTERM (what Slurm sends before preempting): the run saves a checkpoint where it stands
    termed = tmp_path / "termed"
    proc = subprocess.Popen(cmd(termed), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.time() < deadline + 240 and not (termed / "checkpoints" / "25").is_dir():
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    status = json.loads((termed / "status.json").read_text())
    assert status["status"] == "interrupted" and status["checkpoint"] > 25, status
    assert (termed / "checkpoints" / str(status["checkpoint"])).is_dir()
    r = subprocess.run(cmd(termed, "--resume"), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and f"from step {status['checkpoint']}" in r.stderr, r.stderr[-2000:]
    for x, y in zip(jax.tree_util.tree_leaves(params(termed)), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)

    # Ctrl-C (SIGINT): the same clean stop at the end of a step, then one line of what was kept and
    # the exact command that resumes (exit 130); that command ends the run as if it never stopped
    stopped = tmp_path / "ctrl-c"
    proc = subprocess.Popen(cmd(stopped), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while time.time() < deadline + 360 and not (stopped / "checkpoints" / "25").is_dir():
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    status = json.loads((stopped / "status.json").read_text())
    assert proc.returncode == 130 and status["status"] == "interrupted" and "Traceback" not in err, err[-2000:]
    assert status["checkpoint"] == status["steps_done"] > 25 and out == ""
    assert (f"interrupted after {status['steps_done']} step(s): kept {stopped} " in err
            and f"checkpoint at step {status['checkpoint']}: the resumed run continues there" in err), err[-2000:]
    assert len(pd.read_csv(stopped / "steps.csv")) == status["steps_done"]
    resume = shlex.split(err.splitlines()[-1].removeprefix("resume: "))
    assert resume[:3] == ["gnn-batching", "run", smoke] and resume[-3:] == ["--out", str(stopped), "--resume"]
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", *resume[1:]], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 0 and f"from step {status['checkpoint']}" in r.stderr, r.stderr[-2000:]
    assert pd.read_csv(stopped / "steps.csv")["step"].tolist() == list(range(200))
    for x, y in zip(jax.tree_util.tree_leaves(params(stopped)), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_resume_refuses_changed_settings_but_not_a_longer_run(tmp_path):
    from gnn_batching.errors import UserError
    from gnn_batching.train.run import check_resumable

    smoke = os.path.join(ROOT, "configs", "smoke.yaml")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(load_config(smoke).to_dict()))
    check_resumable(str(tmp_path), load_config(smoke, ["train.num_train_steps=5000", "train.checkpoint_every=7",
                                                       "dataset.placement=device"]))
    # K steps per call learn what single steps learn only to float rounding: not an exact resume
    for key, value in [("train.lr", 0.5), ("train.seed", 3), ("batching.method", "static-64"), ("model.name", "mpeu"),
                       ("train.steps_per_call", 4)]:
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            check_resumable(str(tmp_path), load_config(smoke, [f"{key}={value}"]))


def _tensorboard_scalars(folder) -> dict:
    """Scalars of the TFRecord event files in ``folder`` (length, crc, Event proto, crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    out: dict = {}
    for name in sorted(os.listdir(folder)):
        data = open(os.path.join(folder, name), "rb").read()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
@pytest.mark.parametrize("per_call", [1, 4])
def test_tensorboard_event_files_hold_the_recorded_losses_and_metrics(tmp_path, per_call):
    """One point per step, as steps.csv, also when a call runs several steps (train.steps_per_call)."""
    import pandas as pd

    out = tmp_path / "r"
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", os.path.join(ROOT, "configs", "smoke.yaml"),
                        "--set", "train.num_train_steps=12", "--set", "train.eval_every=6", "--set",
                        "train.tensorboard=true", "--set", "batching.method=static-constant", "--set",
                        f"train.steps_per_call={per_call}", "--out", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    tb = _tensorboard_scalars(out / "tensorboard")
    steps = pd.read_csv(out / "steps.csv")
    assert steps["call_steps"].max() == per_call  # calls of K steps were formed
    assert [s for s, _ in tb["train/loss"]] == list(range(12))
    np.testing.assert_allclose([v for _, v in tb["train/loss"]], steps["loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in tb["train/step_ms"]], steps["combined_ms"], rtol=1e-5)
    assert [v for _, v in tb["train/graphs_seen"]] == steps["graphs_seen"].tolist()
    evals = pd.read_csv(out / "evals.csv")
    for split in ("val", "test"):
        rows = evals[evals["split"] == split]
        assert [s for s, _ in tb[f"{split}/rmse"]] == [6, 12]
        np.testing.assert_allclose([v for _, v in tb[f"{split}/mae"]], rows["mae"], rtol=1e-6)


@pytest.mark.slow  # two runs; the sampling rule is checked in the fast selection
def test_the_device_probe_times_the_runs_last_steady_steps_alone(tmp_path):
    """device_step_ms / host_overhead_fraction come from the last steady steps of the records (no
    compile, not the first of their shape), and timing them again leaves the trained state as it
    was: the same parameters as a run without the probe."""
    import flax.serialization
    import pandas as pd
    from restart_cases import config

    from gnn_batching.config import resolve_prefetch
    from gnn_batching.train.instruments import first_use
    from gnn_batching.train.run import train_and_evaluate

    s = train_and_evaluate(config("static-64"), str(tmp_path / "probe"), verbose=False)[1]
    off = train_and_evaluate(config("static-64", ["train.device_probe_batches=0"]), str(tmp_path / "off"),
                             verbose=False)[1]
    steps = pd.read_csv(tmp_path / "probe" / "steps.csv")
    steady = steps[(steps["step"] >= 1) & (steps["compiled"] == 0) & ~first_use(steps)]
    sample = steady.tail(8)
    assert s["device_probe_batches"] == len(sample) == 8
    device_total = s["device_step_ms"] * len(sample)
    assert s["host_overhead_fraction"] == pytest.approx(1 - device_total / sample["combined_ms"].sum())
    assert 0 < s["device_step_ms"] < 10 * sample["update_ms"].median()
    assert off["device_probe_batches"] == 0 and np.isnan(off["device_step_ms"])
    params = [flax.serialization.msgpack_restore((tmp_path / d / "params.msgpack").read_bytes()) for d in ("probe", "off")]
    for a, b in zip(jax.tree_util.tree_leaves(params[0]), jax.tree_util.tree_leaves(params[1])):
        np.testing.assert_array_equal(a, b)
    # prefetch: auto is 2 batches on an accelerator and none on the CPU; the summary says what ran
    assert (s["prefetch_setting"], s["prefetch"]) == ("auto", 0)
    assert resolve_prefetch("auto", "gpu") == 2 and resolve_prefetch(3, "cpu") == 3


def test_the_device_probe_samples_only_steady_steps():
    """Past warm-up, no compile, and not the first step of its shape (a shape compiled ahead still
    runs slowly the first time); the last N of those, timed on the final state."""
    import time
    import types

    from gnn_batching.train.device_probe import DeviceProbe

    calls = []

    def step(state, arrays):
        calls.append(arrays)
        time.sleep(0.002)
        return state, {}

    probe = DeviceProbe(step, batches=3, warmup_steps=2)
    loop = types.SimpleNamespace(last={}, place=None, state=None, extra={})
    plan = [(0, "a", 1), (1, "a", 0), (2, "b", 0), (3, "b", 0), (4, "c", 0), (5, "a", 0), (6, "c", 1), (7, "c", 0),
            (8, "d", 0)]  # (step, shape, compiled): steady = 3 (b again), 5 (a again), 7 (c again)
    for s, key, compiled in plan:
        loop.last = {"arrays": np.array([s]), "step_ms": 10.0 * (s + 1), "compiled": compiled, "key": key}
        probe.after_step(loop, s + 1)
    assert [int(s[1][0]) for s in probe.sample] == [3, 5, 7]
    probe.finish(loop)
    assert [int(np.asarray(a)[0]) for a in calls] == [3] * 4 + [5] * 4 + [7] * 4  # one warm call + 3 timed each
    assert loop.extra["device_probe_batches"] == 3 and loop.extra["device_step_ms"] >= 2.0
    assert loop.extra["host_overhead_fraction"] == pytest.approx(1 - 3 * loop.extra["device_step_ms"] / (40 + 60 + 80))
