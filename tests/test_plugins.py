"""Plug-ins: a user's model and batching method in the user's own file, used by name on every
command, refused before any output when they break their contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TEST_CONFIG

from gnn_batching import plugins
from gnn_batching.cli import main
from gnn_batching.config import load_config
from gnn_batching.errors import ConfigError

THROWAWAY = '''
import flax.linen as nn
import jax
import jax.numpy as jnp

from gnn_batching import register_method, register_model
from gnn_batching.batching.methods import BatchingMethod
from gnn_batching.batching.plan import EpochPlan
import numpy as np


@register_model("throwaway-model")
class Throwaway(nn.Module):
    n_species: int
    width: int = 3

    @nn.compact
    def __call__(self, graph):
        h = nn.Dense(self.width)(jax.nn.one_hot(graph.nodes, self.n_species))
        n_graph = graph.n_node.shape[0]
        gid = jnp.repeat(jnp.arange(n_graph), graph.n_node, total_repeat_length=h.shape[0])
        return nn.Dense(1)(jax.ops.segment_sum(h, gid, n_graph))[:, 0]{MODEL_TAIL}


@register_method("throwaway-method")
class Pairs(BatchingMethod):
    """Two graphs per batch, padded to the pair's own size plus a margin."""
    options = {{"margin": 4}}

    def plan(self, order):
        order = np.asarray(order, dtype=np.int64){PLAN_TAIL}
        bounds = np.append(np.arange(0, len(order), 2), len(order))
        sn = np.add.reduceat(self.n_node[order], bounds[:-1]) if len(order) else np.zeros(0, np.int64)
        se = np.add.reduceat(self.n_edge[order], bounds[:-1]) if len(order) else np.zeros(0, np.int64)
        m = int(self.option("margin"))
        shapes = np.stack([sn + m, se + m, np.full_like(sn, 3)], axis=1)
        return EpochPlan(order, bounds, shapes)
'''
with open(TEST_CONFIG, encoding="utf-8") as _fh:  # the tests' tiny run without SchNet's width (not a field here)
    PLAIN = _fh.read().replace("  latent_size: 4\n", "")
TINY = ["--set", "train.num_train_steps=4", "--set", "train.eval_every=0", "--set", "dataset.limit=40"]


@pytest.fixture
def config(tmp_path) -> str:
    path = tmp_path / "plain.yaml"
    path.write_text(PLAIN)
    return str(path)


@pytest.fixture(autouse=True)
def _clean_registry():
    """Each test registers its own plug-ins; the registries and modules are restored after it."""
    plugins.model_names()  # the package's own, registered before the snapshot
    saved = dict(plugins._MODELS), dict(plugins._DENSE), dict(plugins._METHODS)
    before = set(sys.modules)
    yield
    for table, old in zip((plugins._MODELS, plugins._DENSE, plugins._METHODS), saved):
        table.clear()
        table.update(old)
    for name in set(sys.modules) - before:
        if name.startswith("gnn_batching_user_") or name.startswith("user_plugin"):
            del sys.modules[name]


def _write(tmp_path, model_tail: str = "", plan_tail: str = "", name: str = "user_plugin.py") -> str:
    path = tmp_path / name
    path.write_text(THROWAWAY.format(MODEL_TAIL=model_tail, PLAN_TAIL=plan_tail))
    return str(path)


def test_a_throwaway_model_and_method_from_one_file_run_end_to_end(tmp_path, capsys, config):
    """Registered in the user's file only (no file of the package touched): named in the config,
    their hyperparameter and option set with --set, trained, evaluated, recorded."""
    path = _write(tmp_path)
    out = tmp_path / "run"
    code = main(["run", config, "--module", path, *TINY, "--set", "model.name=throwaway-model",
                 "--set", "model.width=5", "--set", "batching.method=throwaway-method",
                 "--set", "batching.options.margin=7", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert (s["model"], s["method"], s["option_margin"]) == ("throwaway-model", "throwaway-method", 7)
    n_species = json.loads((out / "data.json").read_text())["n_species"]
    assert s["n_params"] == n_species * 5 + 5 + 5 * 1 + 1  # Dense(width=5) on the one-hot species, Dense(1)
    assert s["steps"] == 4 and np.isfinite(s["test_mae"]) and s["test_graphs"] > 0
    assert s["real_graphs_per_batch_mean"] == 2.0 and s["graph_fill"] == pytest.approx(2 / 3)
    saved = (out / "config.yaml").read_text()
    assert path in saved and "width: 5" in saved and "margin: 7" in saved
    # the saved config is enough to resume or re-run it: it names the file to import
    from gnn_batching.config import read_yaml

    assert read_yaml(str(out / "config.yaml"))["modules"] == [path]
    prov = json.loads((out / "provenance.json").read_text())["plugins"]
    import hashlib

    sha = hashlib.sha1(open(path, "rb").read()).hexdigest()
    assert prov["model:throwaway-model"] == {"class": "Throwaway", "file": path, "sha1": sha}
    assert prov["method:throwaway-method"]["class"] == "Pairs" and "method:dynamic" not in prov


def test_hyperparameters_and_options_are_validated_against_the_plugins(tmp_path, config):
    path = _write(tmp_path)
    base = ["model.name=throwaway-model", "batching.method=throwaway-method"]
    cfg = load_config(config, [*base, "model.latent_size=null"], modules=[path])
    assert cfg.model.hyperparameters() == {"width": 3}  # the module's default; a saved null is no setting
    with pytest.raises(ConfigError, match=r"model.latent_size: not a hyperparameter of 'throwaway-model'"):
        load_config(TEST_CONFIG, base, modules=[path])  # SchNet's width, set in the file, is not this model's
    with pytest.raises(ConfigError, match=r"model.depth: not a hyperparameter of 'throwaway-model' \(Throwaway\); "
                                          r"its hyperparameters: width"):
        load_config(config, [*base, "model.depth=2"], modules=[path])
    with pytest.raises(ConfigError, match="model.width: expected an integer, got 'wide'"):
        load_config(config, [*base, "model.width=wide"], modules=[path])
    with pytest.raises(ConfigError, match="batching.options.slack: method 'throwaway-method' declares no such "
                                          "option; its options: margin"):
        load_config(config, [*base, "batching.options.slack=2"], modules=[path])
    with pytest.raises(ConfigError, match="batching.options.margin: expected an integer"):
        load_config(config, [*base, "batching.options.margin=0.5"], modules=[path])
    with pytest.raises(ConfigError, match="unknown model 'throwaway-model'"):  # not loaded: not known
        plugins._MODELS.pop("throwaway-model")
        load_config(config, base)


@pytest.mark.parametrize("case, tail, message", [
    ("syntax", "\n    def broken(:\n", r"user_plugin.py does not import: SyntaxError: .*line \d+"),
    ("import", "\n\nimport no_such_package_xyz\n", r"user_plugin.py does not import: ModuleNotFoundError: No module "
                                                   r"named 'no_such_package_xyz' \(.*user_plugin.py, line \d+\)"),
    ("shape", "[:, None]", r"model.name 'throwaway-model' \(Throwaway, .*user_plugin.py\): returns a .* of shape "
                           r"\(3, 1\) .* must return one floating prediction per slot, shape \(3,\)"),
    ("drops", "\n        order = order[1:]", r"batching.method 'throwaway-method' \(Pairs, .*user_plugin.py\): its "
                                             r"plan of an epoch leaves out 1 of \d+ graphs"),
    ("repeats", "\n        order = np.concatenate([order[:1], order[:-1]])", r"throwaway-method.*uses graph \d+ 2 "
                                                                              r"times"),
    ("overfills", "\n        self.cfg.options['margin'] = -1", r"throwaway-method.*pads batch 0 .* too small"),
])
def test_a_broken_plugin_is_refused_before_any_output(tmp_path, capsys, config, case, tail, message):
    """A file that does not import, a model with the wrong output, a method that drops, repeats or
    overfills graphs: exit 2, the file and the problem named, no traceback, no run directory."""
    path = _write(tmp_path, model_tail=tail if case == "shape" else "",
                  plan_tail=tail if case in ("drops", "repeats", "overfills") else "")
    if case in ("syntax", "import"):
        path = tmp_path / "user_plugin.py"
        path.write_text(THROWAWAY.format(MODEL_TAIL="", PLAN_TAIL="") + tail)
    out = tmp_path / "run"
    code = main(["run", config, "--module", str(path), *TINY, "--set", "model.name=throwaway-model",
                 "--set", "batching.method=throwaway-method", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not out.exists()


def test_unknown_names_on_the_command_line_name_the_flag_and_the_registry(tmp_path, capsys):
    assert main(["bench", "step", "--dataset", "aflow-synthetic", "--models", "nope"]) == 2
    assert "--models: unknown model 'nope'; choose one of mpeu, schnet, painn" in capsys.readouterr().err
    assert main(["run", TEST_CONFIG, "--module", str(tmp_path / "missing.py")]) == 2
    assert "--module: " + str(tmp_path / "missing.py") + ": no such file" in capsys.readouterr().err
    assert main(["run", TEST_CONFIG, "--module", "no_such_module_xyz"]) == 2
    assert "--module: no module named 'no_such_module_xyz'" in capsys.readouterr().err


def test_entry_points_register_models_and_methods(tmp_path, monkeypatch, config):
    """An installed package's entry points (groups gnn_batching.models / gnn_batching.methods)."""
    import importlib.metadata as md

    _write(tmp_path, name="user_plugin_ep.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = {"gnn_batching.models": [md.EntryPoint("ep-model", "user_plugin_ep:Throwaway", "gnn_batching.models")],
           "gnn_batching.methods": [md.EntryPoint("ep-method", "user_plugin_ep:Pairs", "gnn_batching.methods")]}
    monkeypatch.setattr(md, "entry_points", lambda group=None: eps.get(group, []))
    monkeypatch.setattr(plugins, "_EP_LOADED", set())
    assert "ep-model" in plugins.model_names() and "ep-method" in plugins.method_names()
    cfg = load_config(config, ["model.name=ep-model", "batching.method=ep-method"])
    assert cfg.model.hyperparameters() == {"width": 3}


def test_a_package_method_is_one_file():
    """The package's own methods and models register themselves where they are defined: the
    registries hold every class, with no second list of names anywhere."""
    from gnn_batching.batching.methods import Buckets
    from gnn_batching.models.painn import PaiNN

    assert plugins.method_class("buckets") is Buckets and plugins.model_entry("painn").cls is PaiNN
    assert plugins.model_entry("schnet").dense.__name__ == "DenseSchNet"
    assert plugins.model_hyperparameters("painn") == {"latent_size": 256, "message_passing_steps": 3, "n_rbf": 20,
                                                      "cutoff": 6.0}
    cfg_dir = os.path.join(ROOT, "gnn_batching", "config")
    schema = "".join(open(os.path.join(cfg_dir, f), encoding="utf-8").read() for f in sorted(os.listdir(cfg_dir))
                     if f.endswith(".py"))
    assert '"static-64", "static-max"' not in schema and '"mpeu", "schnet", "painn"' not in schema


def test_the_readme_plugin_example_is_the_shipped_file():
    """The plug-in page shows configs/my_plugins.py as it is (the slow test runs its sweep)."""
    with open(os.path.join(ROOT, "docs", "plugins.md"), encoding="utf-8") as fh:
        readme = fh.read()
    with open(os.path.join(ROOT, "configs", "my_plugins.py"), encoding="utf-8") as fh:
        body = fh.read()
    start = body.index("@register_model")
    assert body[start:].strip() in readme, "docs/plugins.md's plug-in example differs from configs/my_plugins.py"
    assert "gnn-batching sweep configs/plugins.yaml" in readme


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_the_plugin_sweep_runs_both_beside_the_builtins(tmp_path):
    out = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-m", "gnn_batching.cli", "sweep", os.path.join(ROOT, "configs",
                        "plugins.yaml"), "--set", f"output_dir={out}", "--set", "train.num_train_steps=6",
                        "--set", "dataset.limit=120"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    import pandas as pd

    df = pd.read_csv(out / "results.csv")
    assert sorted(zip(df["model"], df["method"])) == [("schnet", "dynamic"), ("schnet", "static-round"),
                                                      ("tiny-gcn", "dynamic"), ("tiny-gcn", "static-round")]
    assert (df.loc[df["method"] == "static-round", "option_multiple"] == 128).all()
    report = (out / "report.md").read_text()
    assert (out / "figures").is_dir() and "static-round" in report
    # the comparison takes each method's own columns from its class: the option, dynamic's budget rule
    assert "| static-round | multiple=128 |" in report and "| dynamic | budget=full |" in report, report
