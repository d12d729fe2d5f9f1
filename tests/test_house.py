"""The house: imports flow one way (no cycle between the package's modules)."""

from __future__ import annotations

import ast
import logging
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gnn_batching")


def _modules() -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = os.path.join(root, f)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> gnn_batching modules it imports, at any depth (function-level imports count)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names]
            for n in names:
                if n in mods and n != mod and n != "gnn_batching":
                    graph[mod].add(n)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "gnn_batching.sweep.layout" in graph and graph["gnn_batching.sweep.launch"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


IMPORT_EACH_FIRST = """
import importlib, sys
failed = []
for m in sys.argv[1:]:
    for k in [k for k in sys.modules if k == "gnn_batching" or k.startswith("gnn_batching.")]:
        del sys.modules[k]
    try:
        importlib.import_module(m)
    except Exception as exc:
        failed.append(f"{m}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
"""


def test_every_module_imports_when_it_is_imported_first():
    """The graph above sees the imports a module writes; this sees the ones Python adds: importing
    ``a.b`` runs package ``a``'s ``__init__`` first, so an eager ``__init__`` can close a cycle no
    module writes (``study.order`` -> ``batching.plan`` -> ``batching/__init__`` -> ``batching.loader`` ->
    ``study.order``). Each module is imported first in a clean module table, in one process."""
    import subprocess
    import sys

    mods = sorted(m for m in _modules() if not m.endswith("__main__"))
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST, *mods], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", out.stdout


def test_a_packages_names_are_not_shadowed_by_its_submodules():
    """A package whose ``__init__`` loads names lazily must not export a name equal to one of its
    submodules': once that submodule is imported, ``package.name`` is the module, not the function."""
    import importlib
    import types

    mods = sorted(m for m in _modules() if not m.endswith("__main__"))
    for m in mods:
        importlib.import_module(m)
    for m in mods:
        pkg = importlib.import_module(m)
        for name in getattr(pkg, "__all__", []) if hasattr(pkg, "__path__") else []:
            assert not isinstance(getattr(pkg, name), types.ModuleType), f"{m}.{name} is a module"


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# The floors of docs/architecture.md: a module imports only from its own floor or the floors below.
# A package's modules share its floor unless named here on their own (the study's wing spans floors).
FLOORS = {
    "gnn_batching.config": 0, "gnn_batching.errors": 0, "gnn_batching.io": 0, "gnn_batching.rundir": 0,
    "gnn_batching.command": 0, "gnn_batching.progress": 0, "gnn_batching.xla_flags": 0, "gnn_batching.allocator": 0,
    "gnn_batching.plugins": 0, "gnn_batching.study": 0, "gnn_batching.study.published": 0,
    "gnn_batching.data": 1, "gnn_batching.study.split": 1,
    "gnn_batching.batching": 2, "gnn_batching.study.order": 2, "gnn_batching.study.plan": 2,
    "gnn_batching.models": 3, "gnn_batching.ragged": 3, "gnn_batching.study.step": 3,
    "gnn_batching.train": 4,
    "gnn_batching.bench": 5, "gnn_batching.sweep": 5, "gnn_batching.advise": 5, "gnn_batching.dataset_figure": 5,
    "gnn_batching.study.compare": 5, "gnn_batching.study.figures": 5,
    "gnn_batching.cli": 6, "gnn_batching.autobatch": 6,
}


def floor_of(module: str, floors: dict[str, int] = FLOORS) -> int | None:
    """The floor of the longest FLOORS prefix naming ``module`` (None: not housed)."""
    best = max((k for k in floors if module == k or module.startswith(k + ".")), key=len, default=None)
    return None if best is None else floors[best]


def upward_imports(graph: dict[str, set[str]], floors: dict[str, int] = FLOORS) -> list[str]:
    """Every import that points up a floor, and every module without a floor."""
    bad = [f"{m}: no floor" for m in graph if m != "gnn_batching" and floor_of(m, floors) is None]
    for m, deps in graph.items():
        for d in deps:
            if m != "gnn_batching" and floor_of(m, floors) is not None and (floor_of(d, floors) or 0) > floor_of(m, floors):
                bad.append(f"{m} (floor {floor_of(m, floors)}) imports {d} (floor {floor_of(d, floors)})")
    return sorted(bad)


def test_every_module_has_a_floor_and_nothing_points_up():
    graph = import_graph()
    assert "gnn_batching.study.order" in graph and "gnn_batching.cli.sweep" in graph
    assert upward_imports(graph) == []


def test_the_floor_check_finds_upward_imports_and_homeless_modules():
    floors = {"p.low": 0, "p.high": 1}
    assert upward_imports({"p.low.a": {"p.high.b"}, "p.high.b": set()}, floors) == [
        "p.low.a (floor 0) imports p.high.b (floor 1)"]
    assert upward_imports({"p.high.b": {"p.low.a"}, "p.low.a": set(), "p.new": set()}, floors) == ["p.new: no floor"]


def test_sweep_modules_import_one_way():
    g = import_graph()
    s = "gnn_batching.sweep."
    assert g[s + "layout"] <= {"gnn_batching.errors", "gnn_batching.rundir"}  # leaves only
    assert not any(m.startswith(s) for m in g[s + "launch"] - {s + "grid", s + "layout", s + "folder", s + "interrupt"})
    assert {m for m in g[s + "folder"] if m.startswith(s)} == {s + "layout"}  # whose folder: the layout's names
    assert {m for m in g[s + "interrupt"] if m.startswith(s)} == {s + "grid"}  # Ctrl-C: the sweep's cells
    assert s + "plots" not in g[s + "report"] and s + "launch" not in g[s + "results"]


def test_renamed_config_keys_are_refused_with_the_new_name(tmp_path):
    import pytest

    from gnn_batching.config import config_from_dict, load_config
    from gnn_batching.errors import ConfigError

    for section, old, new in (("train", "steps", "num_train_steps"), ("model", "steps", "message_passing_steps"),
                              ("model", "latent", "latent_size")):
        with pytest.raises(ConfigError, match=rf"{section}\.{old} was renamed: use {section}\.{new}"):
            config_from_dict({section: {old: 3}})
    p = tmp_path / "c.yaml"
    p.write_text("name: x\n")
    with pytest.raises(ConfigError, match=r"--set train.steps: renamed; use train.num_train_steps"):
        load_config(str(p), ["train.steps=5"])  # blamed on the override, not on the file
    cfg = load_config(str(p), ["train.num_train_steps=5", "model.latent_size=8", "model.message_passing_steps=2"])
    assert (cfg.train.num_train_steps, cfg.model.latent_size, cfg.model.message_passing_steps) == (5, 8, 2)
    assert cfg.model.hyperparameters()["n_rbf"] == 150  # unset fields keep the study's default


def test_every_config_file_uses_the_current_names():
    from gnn_batching.config import load_config
    from gnn_batching.sweep.grid import load_sweep

    configs = os.path.join(os.path.dirname(PKG), "configs")
    for f in sorted(os.listdir(configs)):
        if not f.endswith(".yaml"):
            continue  # configs/my_plugins.py: the plug-in example, loaded by configs/plugins.yaml
        path = os.path.join(configs, f)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if "grid:" in text:
            assert load_sweep(path).cells
        else:
            load_config(path)


def test_public_api_is_importable_lazily_and_documented():
    import subprocess
    import sys

    import gnn_batching as gb

    for name in gb.__all__:
        obj = getattr(gb, name)
        if callable(obj):
            assert obj.__doc__ and len(obj.__doc__.strip()) > 20, name
    code = "import sys, gnn_batching; print('jax' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_library_code_logs_instead_of_printing():
    """Only the command line prints; everything else goes through ``logging``."""
    offenders = []
    for root, _, files in os.walk(PKG):
        for f in files:
            if not f.endswith(".py") or root == os.path.join(PKG, "cli"):
                continue
            path = os.path.join(root, f)
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            offenders += [f"{path}:{n.lineno}" for n in ast.walk(tree)
                          if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
    assert not offenders, offenders


def test_progress_lines_reach_the_package_logger(caplog):
    from gnn_batching.progress import Progress

    with caplog.at_level(logging.INFO, logger="gnn_batching"):
        p = Progress("job", total=3, every=0.0)
        p.update(3, postfix="loss 1.0")
        p.note("hello")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gnn_batching")]
    assert lines[0].startswith("[job] 3/3") and lines[0].endswith("loss 1.0") and lines[1] == "[job] hello"


def test_progress_eta_counts_only_this_runs_items(caplog, monkeypatch):
    from gnn_batching import progress

    clock = iter([0.0, 0.0, 10.0])  # created at 0, 120 already done at 0, one more item 10 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="gnn_batching"):
        p = progress.Progress("sweep", total=144, every=0.0)
        p.update(120)
        p.update(121)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gnn_batching")]
    assert lines[-1].startswith("[sweep] 121/144 (10 s, ETA 230 s)"), lines  # 23 left x 10 s, not x 10/121 s


def test_a_failed_sweep_cell_is_named_with_its_log(tmp_path, monkeypatch, caplog):
    import subprocess
    import sys

    import yaml

    from gnn_batching.sweep import launch
    from gnn_batching.sweep.grid import load_sweep

    d = {"name": "t", "output_dir": str(tmp_path / "out"),
         "base": {"dataset": {"name": "aflow-synthetic", "limit": 20}, "train": {"num_train_steps": 1}},
         "grid": {"train.seed": [0, 1]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))

    def failing(cell, env, cores, log_path):
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        proc.log = open(log_path, "w")
        return proc

    monkeypatch.setattr(launch, "_launch", failing)
    with caplog.at_level(logging.INFO, logger="gnn_batching"):
        assert launch.run_sweep(load_sweep(str(tmp_path / "s.yaml"))) == 1
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "cell seed=0 failed (exit 3); see " in text and "2 cell(s) failed: seed=0, seed=1" in text


def test_each_local_job_gets_its_own_gpus():
    from gnn_batching.errors import ConfigError
    from gnn_batching.sweep.launch import gpu_env

    assert gpu_env({}, 2, 1)["CUDA_VISIBLE_DEVICES"] == "2"
    assert gpu_env({}, 1, 2)["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert gpu_env({"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, 1, 2)["CUDA_VISIBLE_DEVICES"] == "6,7"
    assert gpu_env({"A": "1"}, 3, 0) == {"A": "1"}
    with pytest.raises(ConfigError, match="only"):
        gpu_env({"CUDA_VISIBLE_DEVICES": "0,1"}, 2, 1)


def test_a_sweep_shows_progress_inside_running_cells(tmp_path, monkeypatch, caplog):
    import subprocess
    import sys

    import yaml

    from gnn_batching.sweep import launch
    from gnn_batching.sweep.grid import load_sweep

    d = {"name": "t", "output_dir": str(tmp_path / "out"),
         "base": {"dataset": {"name": "aflow-synthetic", "limit": 20}, "train": {"num_train_steps": 1}},
         "grid": {"train.seed": [0]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))

    def talking(cell, env, cores, log_path):  # a cell that logs its progress, then runs a while
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        fh = open(log_path, "w")
        code = ("import sys, time; print('[run t] 3/10 (1 s) loss 0.5000, 2.0 ms/step', flush=True); "
                "time.sleep(1.5)")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=fh)
        proc.log = fh
        return proc

    monkeypatch.setattr(launch, "_launch", talking)
    with caplog.at_level(logging.INFO, logger="gnn_batching"):
        launch.run_sweep(load_sweep(str(tmp_path / "s.yaml")), watch_s=0.5)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "running seed=0: 3/10 (1 s) loss 0.5000, 2.0 ms/step" in text, text


def test_every_config_key_is_described_and_the_reference_is_current():
    """docs/config.md is generated from the schema: every field has a line in FIELD_DOCS (and no
    line names a field that does not exist), and the committed page is what the schema gives."""
    import dataclasses

    from gnn_batching import config as c
    from gnn_batching.plugins import model_hyperparameters

    keys = {"name", "modules"}
    for section, cls in (("dataset", c.DatasetSpec), ("model", c.ModelConfig), ("batching", c.BatchingConfig),
                         ("train", c.TrainConfig)):
        keys |= {f"{section}.{f.name}" for f in dataclasses.fields(cls)}
    keys.discard("model.params")  # the model's own hyperparameters, documented per model below
    assert keys - set(c.FIELD_DOCS) == set(), "fields without a description in config.FIELD_DOCS"
    assert set(c.FIELD_DOCS) - keys == set(), "descriptions of fields that do not exist"
    hyper = {k for m in ("schnet", "mpeu", "painn") for k in model_hyperparameters(m)}
    assert hyper == set(c.HYPERPARAMETER_DOCS), "built-in hyperparameters and their descriptions differ"
    with open(os.path.join(ROOT, "docs", "config.md"), encoding="utf-8") as fh:
        assert fh.read() == c.config_reference(), "docs/config.md is stale: run python scripts/config_reference.py"


def test_result_files_honour_the_umask(tmp_path):
    """Atomic writes go through a private temporary file; the result must still get the mode a
    plain open() gives (0644 under umask 022), so others can read a sweep's files."""
    import pandas as pd

    from gnn_batching.io import write_csv_atomic, write_json_atomic, write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(str(tmp_path / "a.md"), "x")
        write_json_atomic(str(tmp_path / "b.json"), {"a": 1})
        write_csv_atomic(str(tmp_path / "c.csv"), pd.DataFrame({"a": [1]}))
        os.umask(0o077)
        write_text_atomic(str(tmp_path / "private.md"), "x")
    finally:
        os.umask(old)
    for name in ("a.md", "b.json", "c.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert (tmp_path / "private.md").stat().st_mode & 0o777 == 0o600
