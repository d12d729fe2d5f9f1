"""One Markdown (or HTML) report per sweep: comparison table, significance, figures, provenance."""

from __future__ import annotations

import html
import json
import os

import pandas as pd

from gnn_batching.io import write_text_atomic
from gnn_batching.sweep.results import COMPARISON_NOTE, collect, format_comparison
from gnn_batching.sweep.stats import pairwise_tests

FIGURES = [
    ("timing", "Time per training step"),
    ("speedup", "Speedup over the slowest method"),
    ("compiles", "Compilations"),
    ("cumulative", "Time to train, compilation included"),
    ("learning", "Test error during training"),
    ("batch_sizes", "What the batches hold"),
    ("fill", "Padding efficiency"),
    ("significance", "Significance of test-error differences"),
]


def _provenance(df: pd.DataFrame) -> dict:
    from gnn_batching.sweep.results import _read_json

    return _read_json(os.path.join(df["run_dir"].iloc[0], "provenance.json"))


def build_markdown(sweep_dir: str, df: pd.DataFrame | None = None) -> str:
    """``df``: the sweep's collected table, if the caller already has it."""
    from gnn_batching.sweep.plots import plot_all

    if df is None:
        df = collect(sweep_dir)
    fig_dir = os.path.join(sweep_dir, "figures")
    if not all(os.path.exists(os.path.join(fig_dir, f"{n}.png")) for n, _ in FIGURES):
        plot_all(sweep_dir, df=df)
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
        "## Results", "", format_comparison(df, markdown=True), "",
        COMPARISON_NOTE.replace("\n", " "),
        "Methods hold different numbers of graphs per batch, so speedups compare graphs/s, not ms/step. "
        "Every row pools only runs that differ in their seed (`comparison.csv` holds the same table).", "",
        "## Significance of test-RMSE differences", "",
    ]
    if len(tests):
        fixed = {"method_a", "method_b", "metric", "n_a", "n_b", "mean_a", "mean_b", "welch_p", "mannwhitney_p",
                 "welch_p_holm", "mannwhitney_p_holm"}
        cols = [c for c in tests.columns if c not in fixed] + ["method_a", "method_b", "n_a", "n_b", "mean_a",
                                                               "mean_b", "welch_p_holm", "mannwhitney_p_holm"]
        t = tests[cols].copy()
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, r in t.iterrows():
            lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |")
        lines += ["", "Welch's t-test and Mann-Whitney U, two-sided, Holm-corrected over all comparisons above. "
                  "With few seeds the rank test cannot reach small p-values; read the table as 'no evidence of a "
                  "difference' rather than 'no difference' when p is large.", ""]
    for name, title in FIGURES:
        lines += [f"## {title}", "", f"![{title}](figures/{name}.png)", ""]
    lines += ["## Provenance", "", "```", json.dumps(prov, indent=1), "```", ""]
    return "\n".join(lines)


def write_report(sweep_dir: str, fmt: str = "md", df: pd.DataFrame | None = None) -> str:
    md = build_markdown(sweep_dir, df)
    if fmt == "md":
        path = os.path.join(sweep_dir, "report.md")
        write_text_atomic(path, md)
        return path
    body = []
    for line in md.split("\n"):
        if line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            body.append(f'<img src="{html.escape(src)}" style="max-width:100%">')
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        else:
            body.append(html.escape(line))
    style = "font-family:sans-serif;white-space:pre-wrap"
    doc = f"<html><body><pre style='{style}'>" + "\n".join(body) + "</pre></body></html>"
    path = os.path.join(sweep_dir, "report.html")
    write_text_atomic(path, doc)
    return path
