"""Restarts that never lose a record or bend a number: a killed run resumed from its checkpoint
ends with the parameters, evaluation rows, compile counts, steady-state figures and time-to-train
of a run that never stopped (restarts' own costs reported apart); a failed resume touches nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from restart_cases import TINY, config, frames, killed_run, max_rel_diff, params, straight_and_resumed

from gnn_batching.errors import UserError
from gnn_batching.train.run import train_and_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def check_resumed_equals_straight(base: str, s: dict, r: dict) -> None:
    """Everything a reviewer would compare between a resumed run and an uninterrupted one."""
    a, b = frames(os.path.join(base, "straight")), frames(os.path.join(base, "resumed"))
    # records: every step once, the same batches, the same evaluation rows (the one written before
    # the checkpoint included)
    assert b["steps"]["step"].tolist() == list(range(24))
    for col in ("real_graphs", "real_nodes", "n_node", "n_edge", "n_graph", "graphs_seen"):
        assert b["steps"][col].tolist() == a["steps"][col].tolist(), col
    np.testing.assert_allclose(b["steps"]["loss"], a["steps"]["loss"], rtol=1e-5)
    assert b["steps"]["segment"].tolist() == [0] * 12 + [1] * 12  # resumed from the checkpoint at step 12
    cols = ["step", "split", "graphs", "graphs_seen"]
    assert b["evals"][cols].values.tolist() == a["evals"][cols].values.tolist()
    assert sorted(set(b["evals"]["step"])) == [8, 16, 24]
    np.testing.assert_allclose(b["evals"][["rmse", "mae"]], a["evals"][["rmse", "mae"]], rtol=1e-5)
    # compile counts: what the uninterrupted run compiled, plus the restart's recompiles apart
    for k in ("train_step_compiles", "eval_step_compiles", "train_compiles_ahead", "eval_compiles_ahead",
              "distinct_train_shapes", "graphs_seen", "steps", "checkpoints_saved"):
        assert r[k] == s[k], (k, r[k], s[k])
    assert (s["restarts"], r["restarts"], s["restart_compiles"], s["segments"], r["segments"]) == (0, 1, 0, 1, 2)
    before = b["steps"][b["steps"]["segment"] == 0]
    after = b["steps"][b["steps"]["segment"] == 1]
    seen = set(map(tuple, before[["n_node", "n_edge", "n_graph"]].values))
    again = np.array([tuple(x) in seen for x in after[["n_node", "n_edge", "n_graph"]].values], bool)
    in_step = int(((after["compiled"].to_numpy() > 0) & again).sum())
    pre = b["precompile"]
    ahead_again = int((pre["restart"].astype(bool) & (pre["label"] == "train")).sum())
    assert r["train_restart_compiles"] == in_step + ahead_again >= 1
    assert r["eval_restart_compiles"] >= 1  # evaluation shapes compiled before the kill, again after it
    assert r["restart_compiles"] == r["train_restart_compiles"] + r["eval_restart_compiles"]
    # steady state: steps past warm-up that did not compile and are not the first of their shape IN
    # THEIR SEGMENT (a new process runs each shape's first step slowly again)
    st = b["steps"]
    first = ~st.duplicated(["segment", "n_node", "n_edge", "n_graph"])
    warmup = config("dynamic").train.warmup_steps
    compiled = st.groupby("call")["compiled"].transform("max") > 0  # a call that compiled: all its steps
    steady = st[(st["step"] >= warmup) & ~compiled & ~first]
    assert r["steady_steps"] == len(steady) and r["first_use_steps"] == int(first.sum())
    assert r["graphs_per_s"] == pytest.approx(steady["real_graphs"].sum() / (steady["combined_ms"].sum() / 1e3))
    # one time-to-train rule for every method: what a restart repeated is overhead, not training
    ahead = pre[(pre["label"] == "train") & ~pre["restart"].astype(bool)]["compile_s"].sum()
    rule = st["combined_ms"].sum() / 1e3 - st["restart_compile_s"].sum() + ahead
    assert r["train_wall_s"] == pytest.approx(rule, rel=1e-9)
    last = b["evals"][b["evals"]["step"] == 24]["train_wall_s"]
    np.testing.assert_allclose(last, r["train_wall_s"], rtol=1e-9)  # evals.csv and the summary agree
    restart_ahead = pre[(pre["label"] == "train") & pre["restart"].astype(bool)]["compile_s"].sum()
    assert r["restart_overhead_s"] >= st["restart_compile_s"].sum() + restart_ahead > 0
    assert r["train_wall_s_incl_restarts"] == pytest.approx(r["train_wall_s"] + r["restart_overhead_s"])
    assert r["test_rmse"] == pytest.approx(s["test_rmse"], rel=1e-5)
    assert max_rel_diff(params(os.path.join(base, "resumed")), params(os.path.join(base, "straight"))) < 1e-5
    assert sorted(os.listdir(os.path.join(base, "resumed", "checkpoints"))) == ["12", "18"]


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
@pytest.mark.lowest  # also against the lowest allowed versions (.ci/run)
@pytest.mark.parametrize("method", ["static-pow2"])
def test_a_killed_static_run_resumes_to_the_uninterrupted_records(tmp_path, method):
    s, r = straight_and_resumed(method, str(tmp_path))
    check_resumed_equals_straight(str(tmp_path), s, r)


@pytest.mark.slow  # ~1 min: three more method families, six runs each
@pytest.mark.parametrize("method", ["dynamic", "buckets", "packed", "autobatch"])
def test_every_method_family_resumes_to_the_uninterrupted_records(tmp_path, method):
    s, r = straight_and_resumed(method, str(tmp_path))
    check_resumed_equals_straight(str(tmp_path), s, r)


@pytest.mark.slow  # ~1 min: a fresh process with 4 simulated devices
@pytest.mark.parametrize("method", ["static-pow2", "buckets"])
def test_a_four_device_run_resumes_to_the_uninterrupted_records(tmp_path, method):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, os.path.join(HERE, "restart_cases.py"), method, str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["straight"]["n_devices"] == out["resumed"]["n_devices"] == 4
    check_resumed_equals_straight(str(tmp_path), out["straight"], out["resumed"])


def _tree_digest(folder) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A static-pow2 run killed at step 14 (checkpoints 6 and 12 kept), and an uninterrupted one."""
    base = tmp_path_factory.mktemp("killed")
    cfg = config("static-pow2")
    train_and_evaluate(cfg, str(base / "straight"), verbose=False)
    killed_run(cfg, str(base / "killed"), 14)
    return base


def _copy(killed, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed / "killed", out)
    return out


def _empty_files(d):
    for dirpath, _, files in os.walk(d):
        for f in files:
            open(os.path.join(dirpath, f), "w").close()


CORRUPTIONS = {
    "emptied files": lambda ck: _empty_files(ck / "12"),
    "missing state directory": lambda ck: shutil.rmtree(next(p for p in (ck / "12").iterdir() if p.name == "state")),
    "metadata of another step": lambda ck: [p.write_text(p.read_text().replace('"steps_done": 12', '"steps_done": 11'))
                                            for p in (ck / "12").rglob("*") if p.is_file() and "steps_done" in
                                            p.read_text(errors="ignore")],
}


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(killed, tmp_path, kind):
    out = _copy(killed, tmp_path)
    CORRUPTIONS[kind](out / "checkpoints")
    s = train_and_evaluate(config("static-pow2"), str(out), verbose=False, resume=True)[1]
    assert s["restarts"] == 1 and s["steps"] == 24
    steps = pd.read_csv(out / "steps.csv")
    assert steps["step"].tolist() == list(range(24))
    assert steps["segment"].tolist() == [0] * 6 + [1] * 18  # from checkpoint 6
    assert max_rel_diff(params(out), params(killed / "straight")) < 1e-5
    assert [p.name.split("-")[0] for p in (out / "checkpoints-corrupt").iterdir()] == ["12"]  # kept, set aside


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_a_half_written_checkpoint_is_ignored(killed, tmp_path):
    out = _copy(killed, tmp_path)
    tmp = out / "checkpoints" / "18.orbax-checkpoint-tmp-1764480000"
    shutil.copytree(out / "checkpoints" / "12", tmp)
    _empty_files(tmp)
    s = train_and_evaluate(config("static-pow2"), str(out), verbose=False, resume=True)[1]
    assert pd.read_csv(out / "steps.csv")["segment"].tolist() == [0] * 12 + [1] * 12
    assert s["steps"] == 24 and max_rel_diff(params(out), params(killed / "straight")) < 1e-5


def test_no_readable_checkpoint_stops_with_a_named_error_and_touches_nothing(killed, tmp_path, capsys):
    out = _copy(killed, tmp_path)
    for step in ("6", "12"):
        _empty_files(out / "checkpoints" / step)
    before = _tree_digest(out)
    from gnn_batching.cli import main

    sets = [a for x in [*TINY, "batching.method=static-pow2"] for a in ("--set", x)]
    code = main(["run", os.path.join(ROOT, "configs", "smoke.yaml"), *sets, "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint can be restored" in err and "Traceback" not in err, err[-2000:]
    assert str(out / "checkpoints" / "12") in err and str(out / "checkpoints" / "6") in err
    assert _tree_digest(out) == before  # steps.csv, evals.csv, status.json ... byte-identical


@pytest.mark.parametrize("steps, ok", [(10, False), (12, True)])
def test_resuming_with_fewer_steps_than_the_checkpoint(killed, tmp_path, steps, ok):
    """Below the newest checkpoint: refused by name, nothing touched. Equal to it: the run ends
    there with its final evaluation."""
    out = _copy(killed, tmp_path)
    before = _tree_digest(out)
    cfg = config("static-pow2", [f"train.num_train_steps={steps}"])
    if not ok:
        with pytest.raises(UserError, match=r"step 12, past train\.num_train_steps=10"):
            train_and_evaluate(cfg, str(out), verbose=False, resume=True)
        assert _tree_digest(out) == before
        return
    s = train_and_evaluate(cfg, str(out), verbose=False, resume=True)[1]
    assert s["steps"] == 12 and len(pd.read_csv(out / "steps.csv")) == 12
    evals = pd.read_csv(out / "evals.csv")
    assert sorted(set(evals["step"])) == [8, 12]


def test_a_save_orbax_skips_is_not_counted(tmp_path):
    import jax.numpy as jnp

    from gnn_batching.train.checkpoint import Checkpoints

    ck = Checkpoints(str(tmp_path), 5, 0, 2)
    state = {"w": jnp.ones(3)}
    assert ck.save(5, state, {"a": 1}) is True
    assert ck.save(5, state, {"a": 1}) is False  # the same step again (SIGTERM on a checkpoint step)
    assert ck.saved == 1
    ck.close()
