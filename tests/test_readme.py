"""The documentation's Python examples run as printed, and every command it shows is a valid
command of this version (parsed by the CLI's own parser, its config files loaded)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


DOC_FILES = ["README.md", "CONTRIBUTING.md", *(os.path.join("docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs")))
                                            if f.endswith(".md"))]


def _text() -> str:
    out = []
    for name in DOC_FILES:
        with open(os.path.join(ROOT, name), encoding="utf-8") as fh:
            out.append(fh.read())
    return "\n".join(out)


def _block(marker: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", _text(), re.S) if b.startswith(marker)]
    assert len(blocks) == 1, f"the docs have {len(blocks)} blocks starting with {marker!r}"
    return blocks[0]


def _commands() -> list[list[str]]:
    """Every ``gnn-batching ...`` command in a bash block of the docs, as argv (continuations joined,
    comments and environment prefixes dropped)."""
    import shlex

    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", _text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(re.sub(r"\s\[[^\]]*\]", "", line), comments=True)  # [optional parts] dropped
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VAR=value prefixes
            if words and words[0].endswith("gnn-batching"):
                cmds.append(words[1:])
    return cmds


def test_every_command_in_the_docs_parses_and_its_configs_load():
    """A renamed flag, sub-command or config key in the docs fails here; runs and sweeps are
    not executed (CI runs the quick start's and the tests' commands), but parsed by the CLI's
    own parser and their config files loaded with their --set overrides."""
    from gnn_batching.cli import build_parser
    from gnn_batching.config import load_config
    from gnn_batching.sweep.grid import load_sweep

    cmds = _commands()
    assert len(cmds) >= 20, cmds
    parser = build_parser()
    for argv in cmds:
        a = parser.parse_args(argv)
        cfg = getattr(a, "config", None) or getattr(a, "sweep", None)
        if cfg and str(cfg).startswith("configs/"):
            path = os.path.join(ROOT, cfg)
            sets = getattr(a, "set", None) or []
            modules = [os.path.join(ROOT, m) for m in getattr(a, "module", None) or []]
            if a.command == "sweep":
                load_sweep(path, sets, modules=modules)
            else:
                load_config(path, sets, modules=modules)


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


@pytest.mark.slow  # a sweep: another process per cell
def test_the_file_dataset_sweep_example_runs(tmp_path):
    """The guide's sweep over the user's own structures, on a small extxyz file, shrunk with --set."""
    import pandas as pd
    import yaml
    from test_sources import _write_extxyz

    with open(os.path.join(ROOT, "docs", "guide.md"), encoding="utf-8") as fh:
        readme = fh.read()
    block = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("# my_sweep.yaml")]
    assert len(block) == 1
    sweep = yaml.safe_load(block[0])
    data = tmp_path / "my_structures.extxyz"
    _write_extxyz(data, n=40)
    sweep["base"]["dataset"]["name"] = f"file:{data}"
    (tmp_path / "my_sweep.yaml").write_text(yaml.safe_dump(sweep))
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "sweep", "my_sweep.yaml", "--set",
                        "output_dir=out", "--set", "train.num_train_steps=3", "--set", "train.eval_every=0",
                        "--set", "model.latent_size=8", "--set", "grid.batching.batch_size=[8]", "--set",
                        "grid.train.seed=[0]", "--set", "repeats=1"], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "GNN_BATCHING_DATA": str(tmp_path / "data")}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(df["method"]) == ["dynamic", "static-64", "static-pow2"] and (df["steps"] == 3).all()


@pytest.mark.slow  # builds the documentation site (another process, ~10 s)
def test_the_api_page_links_its_cross_references_and_the_site_is_ignored(tmp_path):
    """`mkdocs build --strict` passes; the built API page shows no raw Sphinx role (`:func:` ...),
    and resolved roles are links (scripts/sphinx_roles.py); the site folder is git-ignored."""
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    page = (site / "api" / "index.html").read_text(encoding="utf-8")
    raw = re.findall(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj):(?:<code>|`)", page)
    assert not raw, f"{len(raw)} raw Sphinx roles on the API page"
    # e.g. hooks' module docstring names StopOnSignal; train_and_evaluate's names load_config (a lazy name)
    assert re.search(r'<a class="autorefs autorefs-internal"[^>]*href="#gnn_batching\.train\.hooks\.StopOnSignal"',
                     page)
    assert 'href="#gnn_batching.config.load_config"><code>gnn_batching.load_config</code></a>' in page
    r = subprocess.run(["git", "check-ignore", "-q", "site/index.html"], cwd=ROOT)
    assert r.returncode == 0, "site/ (mkdocs build's output) is not git-ignored"


def _script_and_readme(name: str):
    """A module of scripts/ (imported from there) and the README's text."""
    import importlib

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.pop(0)
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        return module, fh.read()


def test_the_readme_is_a_front_page_whose_figures_are_generated():
    """The README stays a front page (<= 220 lines), its quick-start verdict, table and figure are
    exactly what scripts/quickstart_table.py writes from the records kept in docs/data/quickstart
    (no hand-typed ratio), and the docs' home page is the README with its links made relative."""
    quickstart_table, readme = _script_and_readme("quickstart_table")
    assert len(readme.splitlines()) <= 220
    block = readme.split(quickstart_table.BEGIN, 1)[1].split(quickstart_table.END, 1)[0].strip()
    assert block == quickstart_table.block(os.path.join(ROOT, "docs", "data", "quickstart")).strip()
    assert "x faster than" in block or "no difference beyond noise" in block  # the verdict, with its interval
    with open(os.path.join(ROOT, "docs", "index.md"), encoding="utf-8") as fh:
        assert fh.read() == quickstart_table.home_page(readme)


def test_the_quick_start_block_says_the_day_its_runs_ran_not_the_day_of_the_checkout(tmp_path):
    """The block's date comes from the kept runs' provenance: a clean clone made on another day (new
    mtimes everywhere) writes the same block; without provenance the date is unknown, not guessed."""
    import shutil

    quickstart_table, _ = _script_and_readme("quickstart_table")
    src = os.path.join(ROOT, "docs", "data", "quickstart")
    dst = str(tmp_path / "kept")
    shutil.copytree(src, dst)
    for folder, _, files in os.walk(dst):
        for f in files:
            os.utime(os.path.join(folder, f), (0, 0))  # 1970-01-01
    text = quickstart_table.block(dst).replace(os.path.relpath(dst, ROOT), os.path.relpath(src, ROOT))
    assert "run on 2026-12-05 at commit 50a80c9" in text and text == quickstart_table.block(src)
    for folder, _, files in os.walk(dst):
        if "provenance.json" in files:
            os.remove(os.path.join(folder, "provenance.json"))
    assert "run on ? at commit" in quickstart_table.block(dst)


def test_the_readme_roofline_table_is_generated_from_the_kept_rows():
    """The README's roofline table is what scripts/roofline_table.py writes from the
    ``bench roofline --json`` rows kept in docs/data/roofline: every default model, its work, its
    efficiency, and its speed against the study's step on the same batches."""
    roofline_table, readme = _script_and_readme("roofline_table")
    block = readme.split(roofline_table.BEGIN, 1)[1].split(roofline_table.END, 1)[0].strip()
    src = os.path.join(ROOT, "docs", "data", "roofline")
    assert block == roofline_table.block(src).strip()
    for row in roofline_table.rows(src):
        assert {"flops", "bytes", "roofline_ms", "measured_ms", "efficiency"} <= set(row)
        assert 0 < row["efficiency"] <= 1.5 and row["speedup_vs_study"] > 0
        assert f"| {row['model']} | {row['batch_size']} | {row['flops'] / 1e9:.2f} |" in block
