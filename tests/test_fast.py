"""Fast by default: the caching allocator (chosen by default for training processes, recorded,
results unchanged) and the opt-in persistent compilation cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import TEST_CONFIG

from gnn_batching import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--set", "train.num_train_steps=5", "--set", "model.latent_size=8", "--set", "train.eval_every=0"]


def _run(tmp_path, name, setting):
    env = allocator.child_env(setting)
    out = tmp_path / name
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "run", TEST_CONFIG,
                        *TINY, "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "summary.json").read_text()), pd.read_csv(out / "steps.csv")


@pytest.mark.skipif(allocator.find("mimalloc") is None and allocator.find("tcmalloc") is None
                    and allocator.find("jemalloc") is None, reason="no caching allocator on this platform")
@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_default_preloads_a_caching_allocator_and_changes_no_result(tmp_path):
    fast, fast_steps = _run(tmp_path, "fast", "auto")
    slow, slow_steps = _run(tmp_path, "slow", "system")
    assert fast["allocator"] == allocator.choose("auto")[0] != "system"
    assert slow["allocator"] == "system"
    prov = json.loads((tmp_path / "fast" / "provenance.json").read_text())
    assert prov["allocator"] == fast["allocator"]
    assert fast_steps["loss"].tolist() == slow_steps["loss"].tolist()  # bit-identical training
    assert fast["test_rmse"] == slow["test_rmse"]


def test_choices_and_child_environment(monkeypatch):
    assert allocator.choose("system") == ("system", None)
    with pytest.raises(ValueError, match="GNN_BATCHING_ALLOCATOR='fastest'"):
        allocator.choose("fastest")
    monkeypatch.setenv("LD_PRELOAD", "/x/libmimalloc.so.3 /y/libother.so")
    monkeypatch.setenv("GNN_BATCHING_ALLOCATOR_EXECED", "1")
    env = allocator.child_env("system")
    assert env["LD_PRELOAD"] == "/y/libother.so" and "GNN_BATCHING_ALLOCATOR_EXECED" not in env
    assert env["GNN_BATCHING_ALLOCATOR"] == "system"
    assert allocator.active_allocator() in ("system", "mimalloc", "tcmalloc", "jemalloc")


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_compilation_cache_is_opt_in_and_counted(tmp_path):
    from gnn_batching.config import load_config
    from gnn_batching.train.run import run

    args = ["train.num_train_steps=4", "train.eval_every=0",
            "batching.method=static-64", f"train.compilation_cache={tmp_path / 'cc'}"]
    cfg = load_config(TEST_CONFIG, args)
    first = run(cfg, out_dir=str(tmp_path / "a"), verbose=False)
    second = run(cfg, out_dir=str(tmp_path / "b"), verbose=False)
    assert first["compilation_cache"] == str(tmp_path / "cc") and first["compile_cache_hits"] == 0
    # the second run compiles the same shapes again (counted), but loads them from the cache
    assert second["train_step_compiles"] == first["train_step_compiles"]
    assert second["compile_cache_hits"] == second["train_step_compiles"] + second["eval_step_compiles"]
    plain = run(load_config(TEST_CONFIG, args[:-1]), out_dir=str(tmp_path / "c"),
                verbose=False)
    assert plain["compilation_cache"] is None and plain["compile_cache_hits"] == 0


@pytest.mark.skipif(allocator.choose("auto")[0] == "system", reason="no caching allocator to re-execute with")
def test_the_reexecuted_command_runs_the_installed_code_not_the_current_folders(tmp_path):
    """From a folder holding a ``gnn_batching/`` of its own (another checkout), the allocator's
    re-execution must still run the installed package (``python -P``)."""
    fake = tmp_path / "gnn_batching"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "cli").mkdir()
    (fake / "cli" / "__init__.py").write_text("")
    (fake / "cli" / "__main__.py").write_text("import sys\nprint('IMPOSTOR')\nsys.exit(7)\n")
    env = allocator.child_env("auto")
    r = subprocess.run([sys.executable, "-P", "-m", "gnn_batching.cli", "run", "no-such-config.yaml"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert "IMPOSTOR" not in r.stdout and r.returncode == 2, (r.returncode, r.stdout, r.stderr[-1000:])
    assert "no-such-config.yaml" in r.stderr


def test_an_allocator_asked_for_by_name_but_missing_is_named(monkeypatch, caplog):
    monkeypatch.setattr(allocator, "find", lambda name: None)
    for var in ("GNN_BATCHING_ALLOCATOR_EXECED", "GNN_BATCHING_ALLOCATOR_NOTED"):
        monkeypatch.setenv(var, "")  # unset for ensure(), and removed again after the test
    monkeypatch.setenv("GNN_BATCHING_ALLOCATOR", "jemalloc")
    with caplog.at_level("WARNING"):
        allocator.ensure([])
    text = caplog.text
    assert "GNN_BATCHING_ALLOCATOR=jemalloc" in text and "libjemalloc" in text and "cmeel-mimalloc" not in text
