"""Several steps per dispatch (``train.steps_per_call``): K batches of one shape in one
``lax.scan`` learn what K single steps learn, calls never pass an evaluation or a checkpoint,
every step keeps its row, and a resumed run forms the same calls."""

from __future__ import annotations

import flax.serialization
import numpy as np
import pandas as pd
import pytest
from restart_cases import config, max_rel_diff

from gnn_batching.train.calls import resolve_steps_per_call
from gnn_batching.train.run import train_and_evaluate


def _params(path):
    return flax.serialization.msgpack_restore((path / "params.msgpack").read_bytes())


@pytest.mark.slow  # four runs
@pytest.mark.parametrize("method", ["dynamic", "static-64"])
def test_k_steps_per_call_learn_what_single_steps_learn(tmp_path, method):
    one = train_and_evaluate(config(method, ["train.steps_per_call=1"]), str(tmp_path / "one"), verbose=False)[1]
    four = train_and_evaluate(config(method, ["train.steps_per_call=4"]), str(tmp_path / "four"), verbose=False)[1]
    a, b = (pd.read_csv(tmp_path / d / "steps.csv") for d in ("one", "four"))
    for col in ("step", "real_graphs", "real_nodes", "n_node", "n_edge", "n_graph", "graphs_seen"):
        assert a[col].tolist() == b[col].tolist(), col
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=2e-5)
    assert max_rel_diff(_params(tmp_path / "four"), _params(tmp_path / "one")) < 2e-5
    assert four["test_rmse"] == pytest.approx(one["test_rmse"], rel=2e-5)
    assert (one["steps_per_call"], four["steps_per_call"]) == (1, 4)
    # calls: 4 steps of ONE shape, never across an evaluation (8, 16, 24) or a checkpoint (6, 12, 18)
    calls = b.groupby("call")
    for start, g in calls:
        assert g["step"].tolist() == list(range(start, start + len(g))) and len(g) in (1, 4)
        assert g["call_steps"].nunique() == 1 and g["call_steps"].iloc[0] == len(g)
        assert len(g[["n_node", "n_edge", "n_graph"]].drop_duplicates()) == 1
        assert not any(start < s < start + len(g) for s in (6, 8, 12, 16, 18))
        assert g["combined_ms"].nunique() == 1  # the call's time divided evenly
    if method == "dynamic":  # one shape: calls of 4 wherever the stops leave room
        assert (b["call_steps"] == 4).sum() == 16 and calls.ngroups == 12  # 0-3, 8-11, 12-15, 18-21
        assert four["train_step_compiles"] == 2 and one["train_step_compiles"] == 1  # K steps and one step
    # the compiles' calls are not steady state, even their steps that booked no compile
    compiled_calls = b.groupby("call")["compiled"].transform("max") > 0
    assert four["steady_steps"] <= int((~compiled_calls & (b["step"] >= 1)).sum())


def test_auto_is_eight_steps_per_call_on_an_accelerator_and_one_on_the_cpu():
    assert resolve_steps_per_call("auto", "gpu") == 8 and resolve_steps_per_call("auto", "cpu") == 1
    assert resolve_steps_per_call(4, "cpu") == 4 and resolve_steps_per_call(4, "gpu", n_devices=2) == 1


@pytest.mark.slow  # two runs and a resumed one
def test_a_killed_run_with_k_steps_per_call_resumes_to_the_uninterrupted_records(tmp_path):
    from restart_cases import straight_and_resumed
    from test_restart import check_resumed_equals_straight

    # calls end at 4, 5, 6, 7, 8, 12, 16, ...: killed when the call that ends at 16 is done (checkpoint 12)
    s, r = straight_and_resumed("dynamic", str(tmp_path), ["train.steps_per_call=4"], kill_at=16)
    check_resumed_equals_straight(str(tmp_path), s, r)
    assert r["steps_per_call"] == 4
