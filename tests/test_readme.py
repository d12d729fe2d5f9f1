"""The README's Python examples run as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _block(marker: str) -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith(marker)]
    assert len(blocks) == 1, f"README has {len(blocks)} blocks starting with {marker!r}"
    return blocks[0]


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_autobatch_example_runs_with_one_compiled_step(tmp_path):
    code = _block("# autobatch example")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "GNN_BATCHING_DATA": str(tmp_path / "data")}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"loss ([0-9.]+), compiled variants: (\d+)", r.stdout)
    assert m and float(m.group(1)) < 10 and int(m.group(2)) == 1, r.stdout


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_notebook_example_trains_with_its_own_loop_and_reads_a_sweep(tmp_path):
    import yaml

    sweep = {"name": "q", "output_dir": "results/quickstart",  # a one-cell sweep for the example to read
             "base": {"dataset": {"name": "aflow-synthetic", "limit": 40}, "model": {"latent_size": 8},
                      "train": {"num_train_steps": 2}},
             "grid": {"batching.method": ["dynamic"]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "GNN_BATCHING_DATA": str(tmp_path / "data")}
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "sweep", "s.yaml"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-c", _block("# notebook example")], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"loss ([0-9.]+), test MAE ([0-9.]+) eV", r.stdout)
    assert m and float(m.group(1)) < 5 and float(m.group(2)) < 50, r.stdout  # QM9 U0 spans ~10 eV around its mean
    assert "dynamic" in r.stdout and "graphs_per_s" in r.stdout, r.stdout
