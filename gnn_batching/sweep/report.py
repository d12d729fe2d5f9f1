"""One Markdown (or HTML) report per sweep: comparison table, significance, figures, provenance."""

from __future__ import annotations

import html
import json
import os

import pandas as pd

from gnn_batching.io import write_text_atomic
from gnn_batching.rundir import PROVENANCE
from gnn_batching.study.compare import format_study_compare, study_compare
from gnn_batching.sweep.layout import read_json
from gnn_batching.sweep.results import COMPARISON_NOTE, format_comparison
from gnn_batching.sweep.significance import pairwise_tests
from gnn_batching.sweep.verdict import format_verdict
from gnn_batching.sweep.versus import format_versus, versus_study

FIGURE_TITLES = {
    "timing": "Time per training step",
    "speedup": "Throughput over the slowest method, steady state and including compilation",
    "compiles": "Compilations",
    "cumulative": "Time to train, compilation included",
    "time_to_accuracy": "Test error against training time",
    "learning": "Test error during training",
    "batch_sizes": "What the batches hold",
    "fill": "Padding efficiency",
    "significance": "Significance of test-error differences",
}


def _provenance(df: pd.DataFrame) -> dict:
    return read_json(os.path.join(df["run_dir"].iloc[0], PROVENANCE))


def build_markdown(sweep_dir: str, df: pd.DataFrame, figures: list[str]) -> str:
    """The report as Markdown: ``df`` is the sweep's collected table, ``figures`` the paths of
    the figures to show (as :func:`gnn_batching.sweep.figures.plot_all` returns them)."""
    prov = _provenance(df)
    tests = pairwise_tests(df)
    lines = [f"# Batching comparison: {os.path.basename(os.path.abspath(sweep_dir))}", ""]
    if df["synthetic"].any():
        lines += ["**Some runs use SYNTHETIC data** (aflow-synthetic): timings are meaningful, errors are not "
                  "comparable with real AFLOW.", ""]
    lines += [
        f"{len(df)} finished runs; datasets {sorted(df['dataset'].unique())}, models {sorted(df['model'].unique())}, "
        f"methods {sorted(df['method'].unique())}, batch sizes {sorted(int(b) for b in df['batch_size'].unique())}, "
        f"seeds {sorted(int(s) for s in df['seed'].unique())}, {int(df['steps'].max())} steps per run.", "",
        format_verdict(df), "",
        "## Results", "", format_comparison(df, markdown=True), "",
        COMPARISON_NOTE.replace("\n", " "),
        "Methods hold different numbers of graphs per batch, so speedups compare graphs/s, not ms/step. "
        "Every row pools only runs that differ in their seed (`comparison.csv` holds the same table).", "",
    ]
    compared = study_compare(df)
    if len(compared[0]):
        lines += ["## Beside the study's published runs", "",
                  "Joined with the study's own per-run results (its 100k-step runs; `gnn-batching study compare`).",
                  "", format_study_compare(*compared), ""]
    versus = format_versus(versus_study(df))
    if versus:
        lines += ["## Beyond the study: best new method against the best of the study's three", "", versus,
                  "", "Study methods: static-pow2, static-64, dynamic. Holm p: Welch's test on test RMSE between "
                  "the two steady-state winners, corrected over every comparison of the sweep "
                  "(`versus_study.csv` holds this table).", ""]
    lines += ["## Significance of test-RMSE differences", ""]
    if len(tests):
        fixed = {"method_a", "method_b", "metric", "n_a", "n_b", "mean_a", "mean_b", "welch_p", "mannwhitney_p",
                 "welch_p_holm", "mannwhitney_p_holm"}
        cols = [c for c in tests.columns if c not in fixed] + ["method_a", "method_b", "n_a", "n_b", "mean_a",
                                                               "mean_b", "welch_p_holm", "mannwhitney_p_holm"]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, r in tests[cols].iterrows():
            lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |")
        lines += ["", "Welch's t-test and Mann-Whitney U, two-sided, Holm-corrected over all comparisons above "
                  "(nan: not testable, e.g. no spread in either group). With few seeds the rank test cannot reach "
                  "small p-values; read the table as 'no evidence of a difference' rather than 'no difference' when "
                  "p is large.", ""]
    for path in figures:
        name = os.path.splitext(os.path.basename(path))[0]
        title = FIGURE_TITLES.get(name, name)
        rel = os.path.relpath(path, sweep_dir)
        lines += [f"## {title}", "", f"![{title}]({rel})", ""]
    lines += ["## Provenance", "", "```", json.dumps(prov, indent=1), "```", ""]
    return "\n".join(lines)


def write_report(sweep_dir: str, df: pd.DataFrame, figures: list[str], fmt: str = "md") -> str:
    """Write ``report.md`` or ``report.html`` (real tables and images) into ``sweep_dir``."""
    md = build_markdown(sweep_dir, df, figures)
    if fmt == "md":
        path = os.path.join(sweep_dir, "report.md")
        write_text_atomic(path, md)
        return path
    import markdown

    body = markdown.markdown(md, extensions=["tables", "fenced_code"])
    # a wide table scrolls inside its own box instead of widening the page (the comparison table
    # has ~20 columns); its headers wrap, its figures stay on one line
    body = body.replace("<table>", '<div class="table">\n<table>').replace("</table>", "</table>\n</div>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 12px}"
             ".table{max-width:100%;overflow-x:auto;margin:0 0 1em}table{border-collapse:collapse;font-size:13px}"
             "th,td{border:1px solid #bbb;padding:3px 6px}th{white-space:normal;vertical-align:bottom}"
             "td{white-space:nowrap}img{max-width:100%}pre{background:#f4f4f4;padding:8px;overflow:auto}")
    doc = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(os.path.basename(sweep_dir))}"
           f"</title><style>{style}</style></head><body>\n{body}\n</body></html>\n")
    path = os.path.join(sweep_dir, "report.html")
    write_text_atomic(path, doc)
    return path
