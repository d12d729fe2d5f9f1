"""Every figure works for any grid: one or several batch sizes, one or several seeds. Drawn from
small hand-made sweeps (records written, no training) and checked through matplotlib's artists:
data inside the visible axes range, legends that cover no panel, identical lines named, labels
readable, and the numbers the table also shows."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml

matplotlib.use("Agg")

from gnn_batching.study import figures as study_plots
from gnn_batching.sweep import figures, plots
from gnn_batching.sweep.results import collect

CLOSE = plots.plt.close  # the real one: the tests below keep figures open to inspect them
METHODS = {"static-pow2": (700.0, 3), "static-64": (900.0, 30), "dynamic": (1000.0, 1)}  # graphs/s, compiles


def fake_sweep(root, sizes, seeds, steps=20):
    """A sweep folder with records of every (method, batch size, seed): static methods with one
    seed see the same batches, so their losses and test errors are identical (as in real runs)."""
    d = root / "sweep"
    (d / "runs").mkdir(parents=True)
    grid = {"batching.method": list(METHODS), "batching.batch_size": sizes, "train.seed": seeds}
    (d / "sweep.json").write_text(json.dumps({"name": "t", "grid": grid, "base": {}}))
    for method, (gps, compiles) in METHODS.items():
        for bs in sizes:
            for seed in seeds:
                run = d / "runs" / f"{method}-{bs}-{seed}"
                run.mkdir()
                rng = np.random.default_rng(seed)
                real = np.full(steps, bs - 1) if method != "dynamic" else rng.integers(bs - 3, bs, steps)
                ms = real / gps * 1e3 + (np.arange(steps) < compiles) * 500.0
                pd.DataFrame({"step": range(steps), "segment": 0, "assembly_ms": ms * 0.1, "update_ms": ms * 0.9,
                              "combined_ms": ms, "compiled": (np.arange(steps) < compiles).astype(int),
                              "restart_compile_s": 0.0, "real_graphs": real, "real_nodes": real * 18,
                              "real_edges": real * 300, "n_node": bs * 20, "n_edge": bs * 320, "n_graph": bs,
                              "loss": 1.0 / (1 + np.arange(steps)) + 0.01 * seed,
                              "graphs_seen": np.cumsum(real)}).to_csv(run / "steps.csv", index=False)
                curve = 2.0 / (1 + np.arange(1, 5)) + 0.05 * seed + (0.02 if method == "dynamic" else 0.0)
                ev = [{"step": 5 * (k + 1), "split": split, "rmse": curve[k], "mae": curve[k] * 0.8, "graphs": 10,
                       "graphs_seen": 5 * (k + 1) * (bs - 1), "train_wall_s": ms[: 5 * (k + 1)].sum() / 1e3}
                      for k in range(4) for split in ("val", "test")]
                pd.DataFrame(ev).to_csv(run / "evals.csv", index=False)
                cfg = {"dataset": {"name": "qm9"}, "model": {"name": "schnet"},
                       "batching": {"method": method, "batch_size": bs}, "train": {"seed": seed}}
                (run / "config.yaml").write_text(yaml.safe_dump(cfg))
                wall = ms.sum() / 1e3
                summary = {"dataset": "qm9", "model": "schnet", "method": method, "batch_size": bs, "seed": seed,
                           "steps": steps, "unit": "eV", "synthetic": False, "device_kind": "cpu", "cpu_model": "x",
                           "graphs_per_s": gps + seed, "graphs_per_s_incl_compile": real.sum() / wall,
                           "train_wall_s": wall, "graphs_seen": int(real.sum()), "combined_ms_median": float(
                               np.median(ms)), "combined_ms_mean": float(ms.mean()), "assembly_ms_median": 0.1,
                           "update_ms_median": 0.9, "train_step_compiles": compiles, "eval_step_compiles": 1,
                           "train_compile_seconds": 0.5 * compiles, "compile_seconds": 0.5 * compiles + 7.0,
                           "node_fill": 0.9, "edge_fill": 0.8, "graph_fill": 1.0,
                           "real_graphs_per_batch_mean": float(real.mean()), "test_rmse": float(curve[-1]),
                           "test_mae": float(curve[-1] * 0.8)}
                (run / "summary.json").write_text(json.dumps(summary))
    return str(d)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    CLOSE("all")


def _draw(tmp_path, monkeypatch, sizes, seeds) -> dict:
    figs = {}
    real_save = plots._save

    def keep(fig, out_dir, name, fmt):
        fig.canvas.draw()
        figs[name] = fig
        return real_save(fig, out_dir, name, fmt)

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(study_plots, "_save", keep)
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: None)  # keep them open for the checks
    sweep = fake_sweep(tmp_path, sizes, seeds)
    figures.plot_all(sweep, df=collect(sweep))
    return figs


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0) * max(h, 0)


@pytest.mark.parametrize("sizes, seeds", [([64], [0]), pytest.param([64], [0, 1, 2], marks=pytest.mark.slow),
                                          pytest.param([16, 64], [0], marks=pytest.mark.slow), ([16, 64], [0, 1, 2])])
def test_every_figure_shows_its_data_for_any_grid(tmp_path, monkeypatch, sizes, seeds):
    figs = _draw(tmp_path, monkeypatch, sizes, seeds)
    assert set(figs) == {f.__name__.removeprefix("plot_") for f in figures.FIGURES}
    for name, fig in figs.items():
        renderer = fig.canvas.get_renderer()
        boxes = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()]
        for leg in fig.legends:  # legends sit outside every panel
            lb = leg.get_window_extent(renderer)
            assert all(_overlap(lb, b) == 0 for b in boxes), name
        for ax in fig.axes:
            assert ax.get_legend() is None, f"{name}: a legend inside a panel"
            x0, x1 = sorted(ax.get_xlim())
            y0, y1 = sorted(ax.get_ylim())
            data_lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
            data_lines += [c.lines[0] for c in ax.containers if hasattr(c, "lines") and c.lines[0] is not None]
            for line in data_lines:
                xs, ys = (np.asarray(v, float) for v in line.get_data())
                ok = np.isfinite(xs) & np.isfinite(ys)
                if not ok.any():
                    continue
                assert x1 > x0 and y1 > y0, f"{name}: a degenerate axis range"
                assert ((xs[ok] >= x0) & (xs[ok] <= x1) & (ys[ok] >= y0) & (ys[ok] <= y1)).all(), \
                    f"{name}: {line.get_label()} drawn outside the visible range"
        # a lone batch size keeps a readable log axis (a margin either side, a tick on it)
    if len(sizes) == 1:
        ax = figs["timing"].axes[0]
        lo, hi = ax.get_xlim()
        assert lo < sizes[0] < hi and hi / lo > 2 and list(ax.get_xticks()) == sizes


def test_identical_lines_are_named_and_labels_readable(tmp_path, monkeypatch):
    figs = _draw(tmp_path, monkeypatch, [64], [0])
    for name in ("learning", "time_to_accuracy"):
        labels = [t.get_text() for leg in figs[name].legends for t in leg.get_texts()]
        assert any("static-64" in t and "static-pow2" in t and "identical to" in t for t in labels), (name, labels)
    # one seed: nothing is testable, and the figure says so instead of drawing "n/a" heatmaps
    texts = [t.get_text() for ax in figs["significance"].axes for t in ax.texts]
    assert any("No pairwise test is possible" in t and "1 seed per method" in t for t in texts)
    # compiles: the train-step seconds, as the table's "compile s" (not train + eval)
    ax = figs["compiles"].axes[1]
    ys = sorted(float(y) for c in ax.containers if c.get_label() in METHODS for y in c.lines[0].get_ydata())
    assert ys == sorted(0.5 * c for _, c in METHODS.values())


def test_significance_labels_contrast_with_their_cells(tmp_path, monkeypatch):
    figs = _draw(tmp_path, monkeypatch, [64], [0, 1, 2])
    ax = figs["significance"].axes[0]
    image = ax.get_images()[0]
    for t in ax.texts:
        if t.get_text() == "n/a":
            continue
        x, y = (round(v) for v in t.get_position())
        r, g, b, _ = image.cmap(image.norm(image.get_array()[y, x]))
        luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
        colour = matplotlib.colors.to_rgb(t.get_color())
        assert abs(sum(colour) / 3 - luminance) > 0.4, (t.get_text(), luminance, colour)


def test_the_studys_time_series_is_the_mean_of_each_twentieth_of_the_run(tmp_path, monkeypatch):
    """Its running average: every marker is the mean combined ms of one window of the run's steps
    (compiling steps included), averaged over seeds; 60 steps -> 20 windows of 3 steps."""
    figs = {}
    monkeypatch.setattr(study_plots, "_save", lambda fig, out_dir, name, fmt: figs.setdefault(name, fig))
    sweep = fake_sweep(tmp_path, [64], [0, 1], steps=60)
    df = collect(sweep)
    study_plots.plot_study_time_series(df, str(tmp_path), "png")
    ax = figs["study_time_series"].axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"dynamic", "static-pow2 (study: static-$2^N$)", "static-64"}
    for method, label in (("static-64", "static-64"), ("dynamic", "dynamic")):
        per_seed = [pd.read_csv(f"{sweep}/runs/{method}-64-{s}/steps.csv")["combined_ms"].to_numpy() for s in (0, 1)]
        want = np.mean([x.reshape(20, 3).mean(axis=1) for x in per_seed], axis=0)
        xs, ys = lines[label].get_data()
        assert list(xs) == list(range(3, 61, 3))
        np.testing.assert_allclose(ys, want)
    # static-64 compiles in its first 30 steps (500 ms each in the fake records): its windows show it
    assert lines["static-64"].get_data()[1][0] > 5 * lines["static-64"].get_data()[1][-1]


def test_the_studys_heatmaps_are_student_t_tests_in_its_order(tmp_path, monkeypatch):
    from scipy import stats

    figs = {}
    monkeypatch.setattr(study_plots, "_save", lambda fig, out_dir, name, fmt: figs.setdefault(name, fig))
    sweep = fake_sweep(tmp_path, [64], [0, 1, 2])
    df = collect(sweep)
    df.loc[df["method"] == "dynamic", "test_rmse"] = [0.40, 0.60, 0.95]  # unequal spreads: Welch's p would differ
    study_plots.plot_study_significance(df, str(tmp_path), "png")
    t_ax, p_ax = figs["study_significance"].axes[:2]
    assert [x.get_text() for x in t_ax.get_yticklabels()] == ["dynamic", "static-pow2 (study: static-$2^N$)",
                                                                   "static-64"]
    rmse = {m: df[df["method"] == m]["test_rmse"].to_numpy() for m in ("dynamic", "static-pow2")}
    res = stats.ttest_ind(rmse["dynamic"], rmse["static-pow2"])  # Student's t, equal variances
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in t_ax.texts}
    assert texts[(0, 1)] == f"{res.statistic:.2f}" and texts[(1, 0)] == f"{-res.statistic:.2f}"
    assert texts[(0, 0)] == "0.00"  # a method against itself
    p_texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in p_ax.texts}
    assert p_texts[(0, 1)] == f"{res.pvalue:.2f}" and p_texts[(2, 2)] == "1.00"


def test_the_html_reports_tables_scroll_inside_their_own_box(tmp_path):
    """Every table of report.html sits in a box that scrolls sideways (the comparison table is wider
    than a laptop screen), so the page itself never overflows."""
    import re

    from gnn_batching.sweep.report import write_report

    sweep = fake_sweep(tmp_path, [16, 64], [0, 1])
    from gnn_batching.sweep.results import METRICS

    for run in (tmp_path / "sweep" / "runs").iterdir():  # what a report reads beyond the figures' records
        (run / "provenance.json").write_text(json.dumps({"git_commit": "abc"}))
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**{m: 1.0 for m in METRICS}, **summary}))
    page = open(write_report(sweep, collect(sweep), [], fmt="html"), encoding="utf-8").read()
    tables = page.count("<table>")
    assert tables >= 2 and page.count('<div class="table">\n<table>') == tables
    assert page.count("</table>\n</div>") == tables
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert ".table{max-width:100%;overflow-x:auto" in style and "max-width:1200px" in style


def test_a_host_share_below_zero_is_shown_clamped_with_its_measurement(tmp_path):
    """The comparison's host share is never an impossible -2 % without comment: it reads
    '~0% (measured -2%)*' and the note under the table says why."""
    from gnn_batching.io import bounded_percent
    from gnn_batching.sweep.results import format_comparison

    assert bounded_percent(0.12) == "12%" and bounded_percent(float("nan")) == "-"
    assert bounded_percent(-0.02) == "~0% (measured -2%)*" and bounded_percent(1.01, word="predicted") == \
        "~100% (predicted 101%)*"
    assert bounded_percent(-0.02, 0.05) == "~0% (measured -2%±5%)*"
    df = collect(fake_sweep(tmp_path, [16], [0]))
    df["device_step_ms"] = 1.0
    df["host_overhead_fraction"] = [-0.02 if m == "dynamic" else 0.3 for m in df["method"]]
    text = format_comparison(df)
    _head, *rows = text.splitlines()
    row = {r.split()[3]: r for r in rows if len(r.split()) > 3 and r.split()[0] == "qm9"}
    assert "~0% (measured -2%)*" in row["dynamic"] and "-2%" not in row["static-64"] and " 30% " in row["static-64"]
    assert "'~0% (measured -2%)*': the step re-timed alone ran slower" in text
    assert "~0% (measured -2%)*" in format_comparison(df, markdown=True)
