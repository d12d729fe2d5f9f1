"""Sweeps: grid expansion, resume after kill -9, config-change refusal, results table, statistics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from gnn_batching.errors import ConfigError, UserError
from gnn_batching.sweep.grid import check_unchanged, load_sweep
from gnn_batching.sweep.significance import holm, pairwise_tests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep_file(tmp_path, steps=4, seeds=(0, 1), methods=("static-pow2", "dynamic"), repeats=1):
    d = {
        "name": "t",
        "output_dir": str(tmp_path / "out"),
        "repeats": repeats,
        "base": {"dataset": {"name": "aflow-synthetic", "limit": 40}, "model": {"name": "schnet", "latent_size": 4},
                 "batching": {"batch_size": 6}, "train": {"num_train_steps": steps, "eval_every": 2}},
        "grid": {"batching.method": list(methods), "train.seed": list(seeds)},
    }
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("n", range(1, 9))
def test_turn_order_is_a_williams_design(n):
    """Each method takes each place of a turn once over n processes, and runs right after each
    other method equally often over n (even n) or 2n (odd n) turns."""
    from collections import Counter

    from gnn_batching.sweep.grid import turn_order

    period = n if n % 2 == 0 else 2 * n
    rows = [turn_order(n, p) for p in range(2 * period)]
    assert rows[:period] == rows[period:] and all(sorted(r) == list(range(n)) for r in rows)
    for start in range(0, period, n):
        assert all(len({r[i] for r in rows[start:start + n]}) == n for i in range(n))
    after = Counter((r[i], r[i + 1]) for r in rows[:period] for i in range(n - 1))
    assert len(after) == n * (n - 1) and len(set(after.values())) <= 1, after


def test_grid_expansion_and_validation(tmp_path, caplog):
    p = _sweep_file(tmp_path)
    sw = load_sweep(str(p))
    # the methods take turns (A B, B A), seeds in the outer loop: no method runs only late or early,
    # nor always first in its turn
    assert [c.cell_id for c in sw.cells] == ["method=static-pow2__seed=0", "method=dynamic__seed=0",
                                            "method=dynamic__seed=1", "method=static-pow2__seed=1"]
    assert sw.cells[2].config["batching"]["method"] == "dynamic" and sw.cells[2].config["train"]["seed"] == 1
    auto = load_sweep(str(_sweep_file(tmp_path, repeats="auto")))  # 2 seeds: 2 repeats, >= 3 processes
    assert auto.repeats == 2 and [c.cell_id for c in auto.cells][4:] == [
        "method=static-pow2__seed=0__rep1", "method=dynamic__seed=0__rep1", "method=dynamic__seed=1__rep1",
        "method=static-pow2__seed=1__rep1"]
    three = load_sweep(str(_sweep_file(tmp_path, methods=("static-pow2", "static-64", "dynamic"), repeats=2)))
    turns = [[c.values["batching.method"] for c in three.cells[i:i + 3]] for i in range(0, 12, 3)]
    assert turns == [["static-pow2", "static-64", "dynamic"], ["static-64", "dynamic", "static-pow2"],
                     ["dynamic", "static-pow2", "static-64"], ["dynamic", "static-64", "static-pow2"]]
    assert auto.cells[4].config == auto.cells[0].config  # a repeat is the same run in a fresh process
    assert load_sweep(str(_sweep_file(tmp_path, repeats="auto", seeds=(0, 1, 2)))).repeats == 1
    assert load_sweep(str(_sweep_file(tmp_path, repeats="auto", methods=("dynamic",)))).repeats == 1
    p = _sweep_file(tmp_path)
    assert load_sweep(str(p), ["repeats=3"]).repeats == 3
    with pytest.raises(ConfigError, match="repeats: a positive integer or auto"):
        load_sweep(str(p), ["repeats=0"])
    with caplog.at_level("INFO", logger="gnn_batching.sweep.grid"):
        sw = load_sweep(str(p), ["output_dir=elsewhere", "train.seed=5", "grid.batching.batch_size=[4, 8]"])
    assert sw.output_dir == "elsewhere" and len(sw.cells) == 4  # seed pinned, batch size now an axis
    assert "--set train.seed=5: pins the grid axis train.seed (was [0, 1])" in caplog.text  # said, not silent
    assert {c.config["train"]["seed"] for c in sw.cells} == {5}
    with pytest.raises(ConfigError, match=r"^--set grid.batching.method=\[greedy\]: batching.method: unknown method"):
        load_sweep(str(p), ["grid.batching.method=[greedy]"])
    bad_grid = yaml.safe_load(p.read_text())
    bad_grid["grid"]["batching.method"] = ["greedy"]
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(bad_grid))
    with pytest.raises(ConfigError, match=r"g.yaml \(cell method=greedy__seed=0\): batching.method: unknown"):
        load_sweep(str(tmp_path / "g.yaml"))
    with pytest.raises(ConfigError, match="batching.batch_sise: unknown key"):
        load_sweep(str(p), ["batching.batch_sise=4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\noutput_dir: y\ngrids: {}\n")
    with pytest.raises(ConfigError, match="grids: unknown key"):
        load_sweep(str(bad))
    for name in ("quickstart", "paper-qm9", "paper-aflow", "paper-aflow-filtered", "paper-qm9-2m", "paper-aflow-2m",
                 "paper-qm9-painn", "paper-aflow-painn"):
        assert load_sweep(os.path.join(ROOT, "configs", f"{name}.yaml")).cells
    from gnn_batching.config import load_config

    study, filtered = (load_config(os.path.join(ROOT, "configs", f"{n}.yaml")).dataset for n in ("aflow",
                                                                                                 "aflow-filtered"))
    assert (study.dft_type, study.ef_range) == (None, None)  # the study filtered nothing
    assert filtered.dft_type == "PAW_PBE" and filtered.ef_range == (-10, 70)
    two = load_sweep(os.path.join(ROOT, "configs", "paper-qm9-2m.yaml"))
    assert {c.config["train"]["num_train_steps"] for c in two.cells} == {2_000_000} and len(two.cells) == 240


def test_holm_and_pairwise_tests():
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, np.nan])), [0.03, 0.06, 0.06, np.nan])
    rng = np.random.default_rng(0)
    rows = []
    for m, mu in (("a", 1.0), ("b", 1.0), ("c", 3.0)):
        for s in range(6):
            rows.append({"dataset": "d", "model": "m", "batch_size": 8, "method": m, "seed": s,
                         "test_rmse": mu + 0.1 * rng.normal()})
    t = pairwise_tests(pd.DataFrame(rows)).set_index(["method_a", "method_b"])
    assert t.loc[("a", "c"), "welch_p_holm"] < 0.01 and t.loc[("a", "c"), "mannwhitney_p_holm"] < 0.05
    assert t.loc[("a", "b"), "welch_p_holm"] > 0.05
    assert (t["welch_p_holm"] >= t["welch_p"]).all()


def _sweep_cmd(p, *extra):
    return [sys.executable, "-m", "gnn_batching.cli", "sweep", str(p), *extra]


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_kill_9_then_resume_then_refuse_changed_config(tmp_path):
    p = _sweep_file(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ)
    proc = subprocess.Popen(_sweep_cmd(p), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if len(list(out.glob("runs/*/summary.json"))) >= 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep AND its running cell, mid-run
    proc.wait()
    finished = len(list(out.glob("runs/*/summary.json")))
    assert 1 <= finished < 4
    r = subprocess.run(_sweep_cmd(p, "--jobs", "2"), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{finished} already done" in r.stderr
    # the sweep's last lines are its verdict, as `results` prints it, naming the report
    lines = r.stdout.rstrip("\n").splitlines()
    at = max(i for i, ln in enumerate(lines) if ln.startswith("Verdict"))
    assert lines[at] == f"Verdict (report: {out / 'report.md'}):" and lines[at - 1] == f"report: {out / 'report.md'}"
    sweep_verdict = lines[at + 1:]
    assert sweep_verdict and all(ln.startswith("* ") for ln in sweep_verdict)
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 4 and df["cell"].is_unique
    assert set(df["axis:batching.method"]) == {"static-pow2", "dynamic"} and set(df["axis:train.seed"]) == {0, 1}
    assert (df["test_graphs"] == 4).all() and (out / "results.parquet").exists()
    assert pd.read_parquet(out / "results.parquet").shape == df.shape
    for fig in ("timing", "speedup", "compiles", "cumulative", "time_to_accuracy", "learning", "batch_sizes", "fill",
                "significance"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000
    assert (out / "significance.csv").exists() and (out / "comparison.csv").exists()
    if len(os.sched_getaffinity(0)) >= 2:  # --jobs 2 pins each cell to its own core, and the run saw it
        resumed = df[~df["cell"].isin(["method=static-pow2__seed=0"])]
        assert (resumed["cpu_affinity"] <= len(os.sched_getaffinity(0)) // 2).any()
    report = (out / "report.md").read_text()
    assert "| dataset | model | bs | method |" in report and "SYNTHETIC" in report and "git_commit" in report
    # a finished sweep re-run does nothing; a changed setting is refused, naming the cell and key
    sw = load_sweep(str(p))
    assert {c.state() for c in sw.cells} == {"done"}
    with pytest.raises(UserError, match=r"cell method=static-pow2__seed=0 was run with different settings "
                                         r"\(train.num_train_steps: 4 -> 6"):
        check_unchanged(load_sweep(str(p), ["train.num_train_steps=6"]))
    # a key added to the schema after a cell ran is filled at its default: not a change, unless set otherwise
    saved = out / "runs" / "method=static-pow2__seed=0" / "config.yaml"
    cfg = yaml.safe_load(saved.read_text())
    del cfg["batching"]["graph_slack"]
    saved.write_text(yaml.safe_dump(cfg))
    check_unchanged(load_sweep(str(p)))
    with pytest.raises(UserError, match=r"batching.graph_slack: 1.25 -> 1.5"):
        check_unchanged(load_sweep(str(p), ["batching.graph_slack=1.5"]))
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "results", str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "speedup" in r.stdout and "dynamic" in r.stdout
    assert r.stdout.startswith("Verdict:\n" + "\n".join(sweep_verdict) + "\n\n")
    # a sweep directory that was moved still plots and reports; a missing run file is named, not skipped
    moved = tmp_path / "moved"
    os.rename(out, moved)
    for cmd in (["plot"], ["report", "--format", "html"]):
        r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", *cmd, str(moved)], capture_output=True,
                           text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    page = (moved / "report.html").read_text()  # real tables and images, not Markdown in <pre>
    assert "<table>" in page and "<th>method</th>" in page and '<img alt="Time per training step" ' \
        'src="figures/timing.png"' in page and "<pre>" not in page.split("<h2>Provenance</h2>")[0]
    assert "runs/" in pd.read_csv(moved / "results.csv")["run_dir"].iloc[0]
    victim = next(moved.glob("runs/*/evals.csv"))
    victim.unlink()
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "plot", str(moved)], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 2 and str(victim) in r.stderr and "missing" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow  # ~40 s: three short sweeps of two cells
def test_ctrl_c_stops_a_sweep_keeps_its_cells_and_resumes_to_the_uninterrupted_tables(tmp_path):
    """Ctrl-C (SIGINT to the sweep's process group, as a terminal sends it) while the second cell
    trains: the finished cell is kept untouched, the running one stops at the end of a step with a
    checkpoint, the sweep says what it kept and prints the exact command that resumes (exit 130).
    That command finishes the sweep with the tables of a sweep that never stopped (every count and
    step number; a resumed cell's own restart reported apart)."""
    import shlex

    from gnn_batching.sweep.results import collect

    def sweep_file(name: str) -> str:
        d = {"name": "c", "output_dir": str(tmp_path / name), "report": False,
             "base": {"dataset": {"name": "aflow-synthetic", "limit": 60}, "model": {"name": "schnet", "latent_size": 4},
                      "batching": {"method": "dynamic", "batch_size": 8},
                      "train": {"num_train_steps": 1500, "eval_every": 500}},
             "grid": {"train.seed": [0, 1]}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(d))
        return str(tmp_path / f"{name}.yaml")

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    r = subprocess.run(_sweep_cmd(sweep_file("straight"), "--jobs", "2"), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    p = sweep_file("stopped")
    proc = subprocess.Popen(_sweep_cmd(p), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    log = stopped / "runs" / "seed=1.log"
    deadline = time.time() + 240
    while time.time() < deadline and not (log.exists() and "[run c-seed=1] " in log.read_text()):
        time.sleep(0.02)  # the second cell has trained its first step
    kept = (stopped / "runs" / "seed=0" / "summary.json").read_bytes()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    status = json.loads((stopped / "runs" / "seed=1" / "status.json").read_text())
    n = status["steps_done"]
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert status["status"] == "interrupted" and status["checkpoint"] == n and 0 < n < 1500, status
    assert "kept 1 finished cell(s) of 2" in err and f"seed=1: stopped after {n} of 1500 steps; checkpoint at step " \
        f"{n}: resumes there" in err, err[-3000:]
    resume = shlex.split(err.splitlines()[-1].removeprefix("resume: "))
    assert resume == ["gnn-batching", "sweep", p], err[-3000:]
    assert not (stopped / "runs" / "seed=1" / "summary.json").exists()
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", *resume[1:]], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "1 already done, 1 to run (1 continues from its checkpoint)" in r.stderr, \
        r.stderr[-3000:]
    assert (stopped / "runs" / "seed=0" / "summary.json").read_bytes() == kept
    a, b = collect(str(straight)), collect(str(stopped))
    counts = ["cell", "steps", "graphs_seen", "epochs", "train_step_compiles", "eval_step_compiles",
              "distinct_train_shapes", "test_graphs", "val_graphs", "node_fill", "edge_fill", "final_loss", "test_rmse"]
    pd.testing.assert_frame_equal(b[counts], a[counts])
    assert b["restarts"].tolist() == [0, 1] and a["restarts"].tolist() == [0, 0]
    for cell in ("seed=0", "seed=1"):
        x, y = (pd.read_csv(d / "runs" / cell / "steps.csv") for d in (straight, stopped))
        assert y["step"].tolist() == list(range(1500))
        cols = ["step", "real_graphs", "real_nodes", "real_edges", "n_node", "n_edge", "graphs_seen", "loss"]
        pd.testing.assert_frame_equal(y[cols], x[cols])
        x, y = (pd.read_csv(d / "runs" / cell / "evals.csv") for d in (straight, stopped))
        cols = ["step", "split", "graphs", "graphs_seen", "rmse", "mae"]
        pd.testing.assert_frame_equal(y[cols], x[cols])
    assert pd.read_csv(stopped / "runs" / "seed=1" / "steps.csv")["segment"].tolist() == [0] * n + [1] * (1500 - n)


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_submitit_local_launcher_runs_resumes_and_names_failed_cells(tmp_path):
    """The cluster code path (submitit job array) on submitit's local executor: every cell runs,
    a re-run submits only unfinished cells, a failing cell is named with its log."""
    p = _sweep_file(tmp_path, steps=2, seeds=(0,), methods=("static-pow2", "dynamic"))
    out = tmp_path / "out"
    cmd = _sweep_cmd(p, "--launcher", "submitit-local", "--time", "0:10:00")
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 submitted through submitit-local" in r.stderr
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 2 and set(df["axis:batching.method"]) == {"static-pow2", "dynamic"}
    assert (out / "runs" / "method=dynamic__seed=0.log").stat().st_size > 0  # the run's own output, per cell
    jobs_before = set(os.listdir(out / "submitit"))
    # a partial cell (no summary.json) runs again (from its checkpoint, else redone); the finished one is not resubmitted
    (out / "runs" / "method=dynamic__seed=0" / "summary.json").unlink()
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 already done, 1 submitted" in r.stderr
    assert len(set(os.listdir(out / "submitit")) - jobs_before) == 1
    # a cell that fails at run time: exit 1, the cell and its log named
    bad = yaml.safe_load(p.read_text())
    bad["output_dir"] = str(tmp_path / "bad")
    bad["grid"] = {"dataset.name": ["aflow-synthetic", f"file:{tmp_path / 'missing.xyz'}"]}
    p.write_text(yaml.safe_dump(bad))
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "1 cell(s) failed:" in r.stderr and "missing.xyz" in r.stderr and ".log" in r.stderr
    with pytest.raises(UserError, match=r"--launcher: unknown 'pbs'"):
        from gnn_batching.sweep.cluster import run_sweep_submitit

        run_sweep_submitit(load_sweep(str(p)), "pbs")


def test_a_resumed_cell_keeps_its_earlier_attempts_log(tmp_path, monkeypatch):
    import gnn_batching.sweep.launch as launch

    monkeypatch.setattr(launch, "prepare_cell", lambda cell: [sys.executable, "-c", "print('attempt')"])
    log_path = tmp_path / "cell.log"
    for _ in range(2):  # killed, then resumed
        proc = launch._launch(None, dict(os.environ), None, str(log_path))
        proc.wait()
        proc.log.close()
    assert log_path.read_text().splitlines() == ["attempt", "attempt"]


def test_a_sweep_over_another_grids_folder_says_so(tmp_path, caplog):
    """Cells of another grid inside the sweep's own folder (left by hand, or by a version without
    the folder check) are named, with the fix."""
    from gnn_batching.sweep.launch import start_sweep

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "output_dir": str(tmp_path / "out"),
                                 "base": {"dataset": {"name": "aflow-synthetic", "limit": 20}},
                                 "grid": {"batching.method": ["dynamic"]}}))
    start_sweep(load_sweep(str(p)))
    (tmp_path / "out" / "runs" / "method=static-64").mkdir(parents=True)
    with caplog.at_level("WARNING"):
        start_sweep(load_sweep(str(p)))
    assert "1 cell(s) of another grid (method=static-64)" in caplog.text and "--set output_dir" in caplog.text


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from gnn_batching.cli import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_a_sweep_never_writes_into_a_folder_that_is_not_its_own(tmp_path, capsys):
    """A folder holding a user's results.csv keeps it byte for byte: refused with one line naming
    the file and the options, also with --force (the sweep would replace it) and in a dry run;
    --force lets the sweep write beside files it does not replace, which it keeps."""
    from gnn_batching.sweep.launch import start_sweep

    p = _sweep_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    mine = b"cell,graphs_per_s\nmy own table,1\n"
    (out / "results.csv").write_bytes(mine)
    for extra in ([], ["--force"], ["--dry-run"]):
        code, err = _cli(["sweep", p, *extra], capsys)
        assert code == 2 and err.startswith(f"error: {out / 'results.csv'}: ") and err.count("\n") == 1, err
        assert "--set output_dir=" in err and ("--force" in err) and "Traceback" not in err
        assert (out / "results.csv").read_bytes() == mine and os.listdir(out) == ["results.csv"]
    (out / "results.csv").rename(out / "notes.txt")
    code, err = _cli(["sweep", p, "--dry-run"], capsys)
    assert code == 2 and str(out / "notes.txt") in err and "pass --force" in err
    assert len(start_sweep(load_sweep(str(p)), force=True)) == 4  # beside the user's file
    assert (out / "notes.txt").read_bytes() == mine and (out / "sweep.json").exists()
    assert len(start_sweep(load_sweep(str(p)))) == 4  # its own folder now: it resumes without --force
    assert _cli(["sweep", p, "--dry-run"], capsys)[0] == 0


def test_two_different_sweeps_never_share_a_folder(tmp_path, capsys):
    """A sweep whose name or grid differs from the folder's sweep.json is refused before anything
    is written, with or without --force (the tables would mix both sweeps); the same sweep resumes."""
    from gnn_batching.sweep.folder import claim_output_dir
    from gnn_batching.sweep.launch import start_sweep

    p = _sweep_file(tmp_path)
    out = tmp_path / "out"
    start_sweep(load_sweep(str(p)))
    manifest = (out / "sweep.json").read_bytes()
    for extra in (["--set", "grid.batching.batch_size=[4, 8]"], ["--set", "name=other"],
                  ["--set", "grid.train.seed=[0, 1, 2]"]):
        for force in ([], ["--force"]):
            code, err = _cli(["sweep", p, *extra, *force], capsys)
            assert code == 2 and err.startswith(f"error: {out / 'sweep.json'}: {out} holds another sweep ("), err
            assert "also not with --force" in err and "--set output_dir=" in err and err.count("\n") == 1
    assert (out / "sweep.json").read_bytes() == manifest and sorted(os.listdir(out)) == ["sweep.json"]
    # the same sweep from another folder, or with other base settings, is still this sweep (a changed
    # setting is refused per cell, naming it: check_unchanged)
    saved = yaml.safe_load(p.read_text())
    claim_output_dir(str(out), {"name": "t", "source": "elsewhere.yaml", "grid": saved["grid"], "base": {}})
    (out / "sweep.json").write_text("{not json")
    with pytest.raises(UserError, match=r"sweep.json: unreadable"):
        claim_output_dir(str(out), {"name": "t", "grid": saved["grid"]})


def test_a_launched_cell_pins_itself_without_forking_this_process(tmp_path, monkeypatch, recwarn):
    """The launcher passes the cores and its pid in the environment; the cell pins itself and
    follows the sweep's death. No preexec_fn: that forks the launching process with its threads
    (JAX's warning 'os.fork() was called ... JAX is multithreaded')."""
    import jax.numpy as jnp

    from gnn_batching.sweep import launch

    jnp.zeros(1).block_until_ready()  # JAX's threads run in this process
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "output_dir": str(tmp_path / "out"),
                                 "base": {"dataset": {"name": "aflow-synthetic", "limit": 20}},
                                 "grid": {"batching.method": ["dynamic"]}}))
    cell = load_sweep(str(p)).cells[0]
    code = ("from gnn_batching.command import apply_launch_env; apply_launch_env(); import os; "
            "print('cores', sorted(os.sched_getaffinity(0)))")
    monkeypatch.setattr(launch, "prepare_cell", lambda cell: [sys.executable, "-c", code])
    log_path = tmp_path / "cell.log"
    proc = launch._launch(cell, dict(os.environ), [0], str(log_path))
    assert proc.wait() == 0
    proc.log.close()
    assert "cores [0]" in log_path.read_text()
    assert not [w for w in recwarn if "fork" in str(w.message)]
