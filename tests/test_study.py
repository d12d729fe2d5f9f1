"""The study's batch sequence, reproduced: its split, its stream, its static batcher (the graph
that completes a batch dropped), so planned compile counts can be set beside its counters."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from gnn_batching.cli import main
from gnn_batching.errors import ConfigError
from gnn_batching.study.order import StudyOrder, planned_compiles, planned_shapes
from gnn_batching.study.split import study_splits


def _their_batches(train: list[int], batch_size: int, steps: int, seed: int = 42) -> list[list[int]]:
    """The study's DataReader and static batcher, written as its code reads (a generator over the
    list, shuffled with Python's random at the end of every pass; a full batch is yielded when
    the next graph arrives, and that graph is not kept)."""
    data = list(train)

    def generator():
        random.seed(seed)
        idx = 0
        while True:
            if idx == len(data):
                random.shuffle(data)
            idx = idx % len(data)
            yield data[idx]
            idx += 1

    out, acc = [], []
    for graph in generator():
        if len(acc) == batch_size - 1:
            out.append(acc)
            acc = []
            if len(out) == steps:
                return out
        else:
            acc.append(graph)
    return out


def _methods(name, bs, n_node, n_edge, train, **kw):
    from gnn_batching.batching import BatchingConfig
    from gnn_batching.batching.registry import registered_methods

    cfg = BatchingConfig(method=name, batch_size=bs, **kw)
    return registered_methods()[name](cfg, n_node, n_edge, train)


def _batches(order: StudyOrder, steps: int) -> list[list[int]]:
    out, e = [], 0
    while len(out) < steps:
        plan = order.plan(e)
        out += [plan.batch(b).tolist() for b in range(len(plan))]
        e += 1
    return out[:steps]


@pytest.mark.parametrize("n, bs, steps", [(23, 4, 30), (50, 8, 40), (7, 3, 25)])
def test_the_study_split_is_scikit_learns_train_test_split(n, bs, steps):
    sp = study_splits(n, (0.8, 0.1, 0.1), 0)
    n_hold = int(np.ceil(0.2 * n))
    assert sorted(sp.train.tolist() + sp.val.tolist() + sp.test.tolist()) == list(range(n))
    perm = np.random.RandomState(0).permutation(n)  # ShuffleSplit: test first, then train, in order
    assert sp.train.tolist() == perm[n_hold:].tolist()
    hold = perm[:n_hold]
    perm2 = np.random.RandomState(1).permutation(n_hold)
    assert sp.test.tolist() == hold[perm2[: int(np.ceil(0.5 * n_hold))]].tolist()


@pytest.mark.parametrize("name", ["static-pow2", "static-64", "static-constant"])
@pytest.mark.parametrize("n, bs, steps", [(23, 4, 30), (50, 8, 40), (7, 3, 25)])
def test_study_order_static_batches_are_its_generator_and_batcher(name, n, bs, steps):
    rng = np.random.default_rng(n)
    n_node, n_edge = rng.integers(1, 30, n), rng.integers(0, 800, n)
    train = study_splits(n, (0.8, 0.1, 0.1), 0).train
    order = StudyOrder(_methods(name, bs, n_node, n_edge, train), train) if len(train) >= 2 * bs else None
    if order is None:
        with pytest.raises(ConfigError, match="study_order"):
            StudyOrder(_methods(name, bs, n_node, n_edge, train), train)
        return
    assert _batches(order, steps) == _their_batches(train.tolist(), bs, steps)
    assert order.stream(3 * len(train))[: len(train)].tolist() == train.tolist()  # the first pass in split order
    e = 0  # every stream position is used once: kept in a batch, or dropped (counted as skipped)
    used = []
    while len(used) < 4 * len(train):
        plan = order.plan(e)
        for b in range(len(plan)):
            used += plan.batch(b).tolist() + [int(plan.skipped[b])]
        e += 1
    assert used == order.stream(len(used)).tolist()


def test_study_order_dynamic_is_jraphs_dynamically_batch_over_the_stream():
    """jraph itself, over the study's generator: the same graphs in the same batches, across passes."""
    import jraph

    from gnn_batching.batching.budgets import Budget

    n, bs, steps = 40, 6, 60
    rng = np.random.default_rng(5)
    n_node, n_edge = rng.integers(1, 12, n), rng.integers(0, 60, n)
    train = study_splits(n, (0.8, 0.1, 0.1), 0).train
    method = _methods("dynamic", bs, n_node, n_edge, train)
    method.budget = Budget(40, 200, bs)
    mine = _batches(StudyOrder(method, train), steps)

    def generator():  # the study's DataReader._make_generator (repeat=True)
        data = list(train)
        random.seed(42)
        idx = 0
        while True:
            if idx == len(data):
                random.shuffle(data)
            idx = idx % len(data)
            g = int(data[idx])
            yield jraph.GraphsTuple(nodes=np.full((n_node[g], 1), g), edges=np.zeros((n_edge[g], 1)),
                                    senders=np.zeros(n_edge[g], np.int32), receivers=np.zeros(n_edge[g], np.int32),
                                    globals=np.array([[g + 1]]), n_node=np.array([n_node[g]]), n_edge=np.array([n_edge[g]]))
            idx += 1

    theirs = []
    for batch in jraph.dynamically_batch(generator(), 40, 200, bs):
        theirs.append([int(x) - 1 for x in np.asarray(batch.globals)[:, 0] if x > 0])  # padding: 0
        if len(theirs) == steps:
            break
    assert mine == theirs


@pytest.mark.parametrize("name", ["static-64", "dynamic"])
def test_study_order_epochs_are_the_batches_that_start_in_each_pass(name):
    """Epoch e holds exactly the batches whose first graph is in pass e, also when a batch starts
    exactly on a pass boundary (40 graphs of one node: 32 training graphs, 4 per batch)."""
    from gnn_batching.batching.budgets import Budget

    n_node, n_edge = np.ones(40, np.int64), np.zeros(40, np.int64)
    train = study_splits(40, (0.8, 0.1, 0.1), 0).train
    method = _methods(name, 5, n_node, n_edge, train)
    if name == "dynamic":
        method.budget = Budget(100, 100, 5)  # 4 graphs a batch, then the count binds
    order, pos = StudyOrder(method, train), 0
    for e in range(6):
        plan = order.plan(e)
        starts = []
        for b in range(len(plan)):
            starts.append(pos)
            pos += len(plan.batch(b)) + (1 if name == "static-64" else 0)  # static: one graph dropped
        assert all(e * 32 <= s < (e + 1) * 32 for s in starts), (e, starts)
    assert pos >= 5 * 32


def test_study_order_refuses_methods_without_a_study_sequence():
    from gnn_batching.batching.loader import make_loaders

    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="batching.study_order: method 'buckets'"):
        m = _methods("buckets", 4, rng.integers(1, 9, 60), rng.integers(0, 40, 60), np.arange(48))
        StudyOrder(m, np.arange(48)).plan(0)
    assert make_loaders  # the loader builds the StudyOrder (tested end to end in test_study_order_run)


def test_study_plan_command_prints_both_sequences(capsys):
    assert main(["study", "plan", "--dataset", "aflow-synthetic", "--limit", "120", "--steps", "50",
                 "--batch-sizes", "4", "8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["method"], r["batch_size"]) for r in rows} == {(m, b) for m in ("static-pow2", "static-64")
                                                              for b in (4, 8)}
    assert all(r["study_order"] >= 1 and r["ours"] >= 1 and r["study"] is None for r in rows)


@pytest.mark.slow  # the full QM9 store
def test_planned_compiles_with_the_study_sequence_match_its_counters_on_qm9():
    """Full QM9, 100k steps: static-pow2 exactly, static-64 within 5 % of the study's published
    recompilation counters (60/89/128/195); with our own sequence they differ by 15-30 %."""
    from gnn_batching.data import DatasetSpec
    from gnn_batching.study.plan import study_plan

    rows = study_plan(DatasetSpec(name="qm9"), [16, 32, 64, 128], verbose=False)
    for r in rows:
        if r["method"] == "static-pow2":
            assert r["study_order"] == r["study"], r
        else:
            assert r["ratio"] == pytest.approx(1.0, abs=0.05), r
            assert r["ours"] > r["study_order"], r


def test_study_compare_joins_a_sweep_with_the_studys_rows(tmp_path):
    """Our summary figures beside the study's published rows for the same cell (QM9, SchNet, bs 16,
    CPU), the ratios between methods computed on each side, the tables and the figure written."""
    import pandas as pd
    from test_trust import _fake_sweep

    from gnn_batching.study.compare import write_study_compare
    from gnn_batching.study.published import study_results
    from gnn_batching.sweep.results import collect

    ms = {"static-pow2": 30.0, "static-64": 120.0, "dynamic": 15.0, "packed": 14.0}
    rows = [{"method": m, "seed": 0, "graphs_per_s": 10.0, "train_step_compiles": 1, "train_wall_s": 1.0,
             "graphs_per_s_incl_compile": 5.0, "test_rmse": 1.0, "ms_per_step_incl_compile": v,
             "combined_ms_median": v / 2} for m, v in ms.items()]
    sweep = _fake_sweep(tmp_path, rows, {"batching.method": [], "train.seed": [0]})
    compared, ratios = write_study_compare(sweep, collect(sweep))
    assert sorted(compared["method"]) == ["dynamic", "static-64", "static-pow2"]  # packed: the study never ran it
    s = study_results("100k")
    theirs = s[(s["dataset"] == "qm9") & (s["model"] == "schnet") & (s["batch_size"] == 16)
               & (s["computing_type"] == "cpu") & (s["batching_type"] == "static") & ~s["batching_round_to_64"]]
    row = compared.set_index("method").loc["static-pow2"]
    assert row["study_ms_incl_compile"] == pytest.approx(theirs["step_100000_update_time_mean"].mean() * 1e3)
    assert row["study_compiles"] == 3 and row["our_ms_incl_compile"] == 30.0
    r = ratios.set_index("ratio").loc["static-pow2 / dynamic"]
    assert r["ours_incl_compile"] == pytest.approx(2.0) and r["ours_steady"] == pytest.approx(2.0)
    assert (tmp_path / "sweep" / "figures" / "study_compare.png").exists()
    assert len(pd.read_csv(tmp_path / "sweep" / "study_ratios.csv")) == 2


STUDY = ["dataset.split_scheme=study", "batching.study_order=true"]


@pytest.mark.slow  # a run; StudyOrder's batches are checked against the study's code in the fast selection
def test_a_study_order_run_trains_on_the_studys_batches(tmp_path):
    """A run with the study's split and sequence steps through exactly the batches StudyOrder
    plans (across passes, every bs-th graph dropped), and compiles once per distinct shape."""
    import pandas as pd
    from restart_cases import config

    from gnn_batching.batching import make_method
    from gnn_batching.data import load_dataset
    from gnn_batching.train.run import train_and_evaluate

    cfg = config("static-64", STUDY)
    summary = train_and_evaluate(cfg, str(tmp_path / "run"), verbose=False)[1]
    ds = load_dataset(cfg.dataset, verbose=False)
    assert ds.splits.train.tolist() == study_splits(len(ds.store), (0.8, 0.1, 0.1), 0).train.tolist()
    order = StudyOrder(make_method(cfg.batching, ds.store, ds.splits.train, 0), ds.splits.train, 42 + cfg.train.seed,
                       init_batch=True)  # the study's first batch initialises the model only
    batches = _batches(order, cfg.train.num_train_steps)
    steps = pd.read_csv(tmp_path / "run" / "steps.csv")
    assert steps["real_graphs"].tolist() == [len(b) for b in batches] == [7] * 24
    assert steps["real_nodes"].tolist() == [int(ds.store.n_node[b].sum()) for b in batches]
    shapes = {tuple(s) for s in steps[["n_node", "n_edge", "n_graph"]].values.tolist()}
    planned = planned_compiles(planned_shapes(map(order.plan, range(10)), 24))
    assert summary["train_step_compiles"] == len(shapes) == planned
    assert summary["skipped_per_epoch"] == 8 + 7  # one in 8 dropped, and pass 0's initialising batch
    assert json.loads((tmp_path / "run" / "data.json").read_text())["batching"]["study_order"] is True


@pytest.mark.slow  # six runs
@pytest.mark.parametrize("method", ["static-64", "dynamic"])
def test_a_killed_study_order_run_resumes_to_the_uninterrupted_records(tmp_path, method):
    """The study's stream resumes at the batch an uninterrupted run would see next (24 steps of 8
    over 64 training graphs run through three passes; killed at 14, resumed from 12)."""
    from restart_cases import straight_and_resumed
    from test_restart import check_resumed_equals_straight

    s, r = straight_and_resumed(method, str(tmp_path), STUDY)
    check_resumed_equals_straight(str(tmp_path), s, r)


def test_the_studys_counters_at_100k_and_2m_steps():
    from gnn_batching.study.published import study_compiles

    assert [study_compiles("qm9", "static-64", bs) for bs in (16, 32, 64, 128)] == [60, 89, 128, 195]
    assert [study_compiles("qm9", "static-64", bs, 2_000_000) for bs in (16, 32, 64, 128)] == [74, 104, 155, 239]
    assert study_compiles("qm9", "static-pow2", 128, 2_000_000) == 1.0  # its rows logging 0 left out
    assert study_compiles("qm9", "static-64", 16, 500) is None and study_compiles("qm9", "packed", 16) is None


def test_the_first_batch_initialises_and_is_not_trained_on():
    """batching.study_first_batch: init (the study's reader batch 0 only initialises the model):
    epoch 0 starts at the stream's second batch and counts the first batch's graphs as skipped;
    later epochs are the same batches as without it."""
    n, bs = 40, 5
    rng = np.random.default_rng(7)
    n_node, n_edge = rng.integers(1, 12, n), rng.integers(0, 60, n)
    train = study_splits(n, (0.8, 0.1, 0.1), 0).train
    plain = StudyOrder(_methods("static-64", bs, n_node, n_edge, train), train)
    init = StudyOrder(_methods("static-64", bs, n_node, n_edge, train), train, init_batch=True)
    p0, i0 = plain.plan(0), init.plan(0)
    assert [i0.batch(b).tolist() for b in range(len(i0))] == [p0.batch(b).tolist() for b in range(1, len(p0))]
    assert set(p0.batch(0).tolist()) <= set(i0.skipped.tolist())
    assert len(i0.skipped) == len(p0.skipped) + len(p0.batch(0))
    p1, i1 = plain.plan(1), init.plan(1)
    assert i1.order.tolist() == p1.order.tolist() and i1.shapes.tolist() == p1.shapes.tolist()


def test_study_first_batch_is_the_studys_rule_only():
    from gnn_batching.config import BatchingConfig

    with pytest.raises(ConfigError, match="batching.study_first_batch: init .*needs batching.study_order"):
        BatchingConfig(method="dynamic", study_first_batch="init")
    with pytest.raises(ConfigError, match="batching.study_first_batch: 'auto', 'init' or 'train'"):
        BatchingConfig(method="dynamic", study_first_batch="skip")


@pytest.mark.slow  # the whole of QM9 (qm9pack): its store is built once per test's data folder
def test_the_paper_budget_is_the_studys_first_1000_training_graphs_in_split_order():
    """Under the study's split and order, budget: paper takes the first 1,000 training graphs in
    split order, as the study's code: 320 / 5,120 at bs 16 and 2,368 / 40,704 at bs 128 on full QM9
    (our own split draws 1,000 at random: 320 / 4,992 and 2,304 / 39,872)."""
    from gnn_batching.batching import BatchingConfig, make_method
    from gnn_batching.data import DatasetSpec, load_dataset

    ds = load_dataset(DatasetSpec(name="qm9", split_scheme="study"), verbose=False)
    got = {}
    for bs in (16, 128):
        for order in (True, False):
            b = make_method(BatchingConfig(method="dynamic", batch_size=bs, budget="paper", study_order=order),
                            ds.store, ds.splits.train).budget
            got[bs, order] = (b.n_node, b.n_edge)
    assert got[16, True] == (320, 5120) and got[128, True] == (2368, 40704)
    assert got[16, False] == (320, 4992) and got[128, False] == (2304, 39872)
