"""The data and bench commands, driven through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_sources import _write_extxyz

from gnn_batching.cli import main

STATS_KEYS = {"n_graphs", "nodes_mean", "nodes_median", "nodes_p99", "nodes_max", "edges_mean", "edges_median",
              "edges_p99", "edges_max", "target_name", "target_unit", "target_mean", "target_std", "synthetic"}


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("qm9", "aflow", "aflow-synthetic", "file:PATH"):
        assert name in out


def test_data_stats_json_file_and_synthetic(tmp_path, capsys):
    p = tmp_path / "m.extxyz"
    _write_extxyz(p, n=10)
    assert main(["data", "stats", f"file:{p}", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert STATS_KEYS <= set(d) and d["n_graphs"] == 10 and d["synthetic"] is False
    assert main(["data", "stats", f"file:{p}"]) == 0
    text = capsys.readouterr().out
    assert "target   energy (no unit given)" in text and "[]" not in text  # a file's target has no unit
    assert main(["data", "stats", f"file:{p}", "--plot", str(tmp_path / "h.png")]) == 0
    capsys.readouterr()
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the study's dataset histograms
    assert main(["data", "stats", "aflow-synthetic", "--limit", "30", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["synthetic"] is True and d["n_graphs"] == 30 and abs(d["edges_mean"] - 12 * d["nodes_mean"]) < 0.01


def test_user_errors_exit_2_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "data", "stats", f"file:{tmp_path}/none.xyz"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "none.xyz: no such file" in r.stderr and "Traceback" not in r.stderr


def test_bench_batching_json(tmp_path, capsys):
    assert main(["bench", "batching", "--dataset", "aflow-synthetic", "--limit", "60", "--batch-sizes", "4", "8",
                 "--methods", "static-pow2", "dynamic", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4
    keys = {"method", "batch_size", "graphs_per_s", "reference_graphs_per_s", "speedup", "node_fill", "edge_fill",
            "graph_fill", "distinct_shapes", "graphs_per_epoch", "split_size", "reused_copy_graphs_per_s",
            "vs_reused_copy"}
    for r in rows:
        assert keys <= set(r)
        assert r["graphs_per_epoch"] == r["split_size"] == 48
        assert r["vs_reused_copy"] == pytest.approx(r["reused_copy_graphs_per_s"] / r["graphs_per_s"], rel=0.02)


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_bench_step_compares_allocators_in_fresh_processes(capsys):
    from gnn_batching import allocator

    settings = ["system", "auto"]
    assert main(["bench", "step", "--dataset", "aflow-synthetic", "--limit", "60", "--models", "schnet",
                 "--batch-sizes", "8", "--steps", "3", "--allocators", *settings, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["setting"] for r in rows] == settings
    assert rows[0]["allocator"] == "system" and rows[0]["speedup_vs_system"] == 1.0
    assert rows[1]["allocator"] == allocator.choose("auto")[0]  # what the fresh process really loaded
    assert rows[1]["speedup_vs_system"] == pytest.approx(rows[0]["ms_per_step"] / rows[1]["ms_per_step"])
    assert all(r["steps"] == 3 and r["ms_per_step"] > 0 and r["graphs_per_s"] > 0 for r in rows)


def test_help_explains_every_argument_and_shows_examples(capsys):
    from gnn_batching.cli import build_parser

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("gnn-batching ")
    top = build_parser().format_help()
    assert "examples:" in top and "gnn-batching sweep configs/quickstart.yaml" in top
    sub = build_parser()._subparsers._group_actions[0].choices
    for name in ("results", "plot", "report"):
        assert "the sweep's output_dir" in sub[name].format_help(), name
    assert "report.html" in sub["report"].format_help() and "figures/" in sub["report"].format_help()
    bench = sub["bench"]._subparsers._group_actions[0].choices
    for name, flags in (("batching", ("--batch-sizes", "--methods", "--pad-edges")), ("step", ("--models", "--methods",
                                                                                                "--batch-sizes"))):
        text = bench[name].format_help()
        for flag in flags:  # every option has a help line (argparse prints it after the flag)
            line = next(ln for ln in text.splitlines() if ln.strip().startswith(flag))
            assert len(line.split(flag, 1)[1].strip()) > 0 or "default" in text.split(line, 1)[1][:200], flag
    assert main(["bench", "step", "--methods", "greedy"]) == 2  # checked against the registry, before any work
    assert "--methods: unknown method 'greedy'; choose one of static-pow2" in capsys.readouterr().err
