"""``gnn-batching advise``: what it plans must be what a run then meets (shapes, compiles, fill,
graphs), its JSON must carry every figure, its fit must recover a known step model. How close its
predicted seconds come is a measurement (`advise --check`, in the README), not a test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TEST_CONFIG

from gnn_batching.advise import _fit, _predict, advise, advise_config
from gnn_batching.cli import main
from gnn_batching.config import load_config
from gnn_batching.data import DatasetSpec

ROW_KEYS = {"method", "predicted_time_to_train_s", "predicted_time_to_train_s_low", "predicted_time_to_train_s_high",
            "predicted_graphs_per_s_incl_compile", "expected_shapes", "compile_s_per_shape", "steady_step_ms", "fill",
            "efficiency_vs_ideal"}


def test_the_fit_recovers_a_known_step_model():
    shapes = [(64, 512, 16), (128, 1024, 16), (96, 2048, 16), (256, 1536, 16)]
    points = [(s, 0.5 + 0.01 * s[0] + 0.002 * s[1]) for s in shapes]
    coef = _fit(points)
    assert coef == pytest.approx([0.5, 0.01, 0.002], rel=1e-6)
    assert _predict(coef, (100, 1000, 8)) == pytest.approx(0.5 + 1.0 + 2.0)
    # noise that would give a negative slope falls back to edges alone, never a negative step time
    noisy = [((10, 100, 4), 1.0), ((1000, 110, 4), 0.9), ((20, 900, 4), 3.0)]
    assert (_fit(noisy)[1:] >= 0).all()


def test_advise_json_carries_every_figure_and_one_recommendation(capsys):
    code = main(["advise", "aflow-synthetic", "--limit", "60", "--steps", "6", "--batch-size", "8", "--methods",
                 "dynamic", "static-64", "--compile-shapes", "1", "--timed-steps", "2", "--set", "model.latent_size=4",
                 "--json"])
    out = capsys.readouterr().out
    assert code == 0
    d = json.loads(out)
    assert {r["method"] for r in d["methods"]} == {"dynamic", "static-64"}
    for r in d["methods"]:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["predicted_time_to_train_s_low"] <= r["predicted_time_to_train_s"] <= \
            r["predicted_time_to_train_s_high"]
        assert r["predicted_graphs_per_s_incl_compile"] == pytest.approx(r["graphs"] / r["predicted_time_to_train_s"])
    times = [r["predicted_time_to_train_s"] for r in d["methods"]]
    assert times == sorted(times) and d["recommendation"]["method"] == d["methods"][0]["method"]
    assert d["recommendation"]["reason"].startswith("shortest predicted time to train 6 steps")
    assert d["ideal"]["graphs_per_s"] > 0 and d["setting"]["model"] == "schnet"
    # the fill ceiling: each method's planned edge fill over the best study method's (both are the study's here)
    best = max(r["edge_fill"] for r in d["methods"])
    assert sorted(r["fill_ceiling"] for r in d["methods"]) == pytest.approx(
        sorted(r["edge_fill"] / best for r in d["methods"]))


def test_advise_refuses_bad_arguments_by_name(capsys):
    assert main(["advise", "aflow-synthetic", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["advise", "aflow-synthetic", "--methods", "nope"]) == 2
    assert "--methods: unknown method 'nope'" in capsys.readouterr().err
    assert main(["advise", "aflow-synthetic", "--set", "model.depth=3"]) == 2
    assert "model.depth: not a hyperparameter of 'schnet'" in capsys.readouterr().err
    assert main(["advise", "aflow-synthetic", "--set", "model.latent_size=0"]) == 2  # named as the --set it came in
    assert capsys.readouterr().err == "error: --set model.latent_size=0: model.latent_size must be >= 1, got 0\n"
    assert main(["advise", "aflow-synthetic", "--seed", "-1"]) == 2
    assert capsys.readouterr().err == "error: advise: --seed must be >= 0, got -1\n"


@pytest.mark.slow  # end to end / another process: run by .ci/run and `pytest -m slow`
def test_what_advise_plans_is_what_each_run_meets(tmp_path):
    """Same dataset, model, batch size and seed: each run compiles exactly the shapes advise
    counted, over the same graphs with the same fill."""
    from gnn_batching.train.run import run

    steps, methods = 14, ["static-64", "dynamic", "packed", "buckets"]
    spec = DatasetSpec(name="aflow-synthetic", limit=120)
    cfg = advise_config(spec, "schnet", 8, ["model.latent_size=4", "train.seed=3"])
    result = advise(cfg, steps, methods, n_compile=2, timed_steps=2, verbose=False)
    by = {r["method"]: r for r in result["methods"]}
    for m in methods:
        run_cfg = load_config(TEST_CONFIG, ["dataset.limit=120", f"batching.method={m}", "batching.batch_size=8",
                                            f"train.num_train_steps={steps}", "train.eval_every=0", "train.seed=3"])
        s = run(run_cfg, out_dir=str(tmp_path / m), verbose=False)
        assert s["train_step_compiles"] == by[m]["expected_shapes"], m
        assert s["graphs_seen"] == by[m]["graphs"], m
        assert s["node_fill"] == pytest.approx(by[m]["fill"], abs=1e-12), m
        assert by[m]["compiled_ahead"] == (1 if m == "packed" else 4 if m == "buckets" else 0)
        assert np.isfinite(by[m]["predicted_time_to_train_s"])


def test_no_impossible_efficiency_without_its_reason():
    """'vs ideal' above 100 % is shown clamped with a note (the step model's error), or as it is
    with its reason (more graphs per step than the ideal's batch_size - 1); never bare."""
    from gnn_batching.advise import format_advice

    def row(method, eff, per_step):
        return {"method": method, "predicted_time_to_train_s": 10.0, "predicted_time_to_train_s_low": 9.0,
                "predicted_time_to_train_s_high": 11.0, "predicted_graphs_per_s_incl_compile": 100.0,
                "expected_shapes": 1, "compile_s_per_shape": 1.0, "steady_step_ms": 5.0, "fill": 0.9,
                "edge_fill": 0.99 if method == "packed" else 0.86, "efficiency_vs_ideal": eff,
                "real_graphs_per_step": per_step}

    result = {"methods": [row("dynamic", 1.013, 15.0), row("packed", 1.08, 18.5), row("static-64", 0.6, 15.0)],
              "ideal": {"graphs_per_s": 99.0, "graphs": 150, "rule": "r"},
              "recommendation": {"method": "dynamic", "reason": "x"},
              "setting": {"dataset": "d", "limit": None, "model": "m", "batch_size": 16, "steps": 10, "seed": 0,
                          "device_kind": "cpu", "backend": "cpu"}}
    from gnn_batching.advise import _fill_ceilings

    _fill_ceilings(result["methods"])  # edge fill over the best study method's: packed 0.99 / 0.86
    text = format_advice(result)
    assert "0.99 (1.15x)" in text and "0.86 (1.00x)" in text
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.split() and ln.split()[0] in ("dynamic", "packed",
                                                                                              "static-64")}
    assert lines["dynamic"].rstrip().endswith("~100% (predicted 101%)*")
    assert lines["packed"].rstrip().endswith("108%+") and lines["static-64"].rstrip().endswith("60%")
    assert "\n* predicted above the padding-free ideal" in text and "\n+ above the ideal because this method " \
        "trains more graphs per step" in text
    result["methods"] = result["methods"][2:]
    assert "\n* " not in format_advice(result) and "\n+ " not in format_advice(result)  # notes only when needed
