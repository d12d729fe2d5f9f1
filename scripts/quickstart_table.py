"""Print the README's quick-start table and the figures its prose quotes, from a results folder.

    python scripts/quickstart_table.py results/quickstart

Reads the sweep (nothing is written), prints the comparison table as Markdown and, per batch
size, the ratios the README states: dynamic over static-pow2 (steady and incl. compile), static-64's
compiles and compile seconds, and static-64's median step right after a compile vs after a
non-compiling step (seed 0). Paste the table; rewrite the prose from the figures.
"""

from __future__ import annotations

import os
import sys

import pandas as pd

from gnn_batching.sweep.results import collect, comparison, format_comparison


def main(sweep_dir: str) -> None:
    """Print the table and the quoted figures."""
    df = collect(sweep_dir, write=False)
    print(format_comparison(df, markdown=True))
    agg = comparison(df).set_index(["batch_size", "method"])
    print()
    for bs in sorted(df["batch_size"].unique()):
        a = agg.loc[bs]

        def ratio(num: str, den: str, col: str, a=a) -> float:
            return a.loc[num, col] / a.loc[den, col]

        steady, incl = "graphs_per_s_mean", "graphs_per_s_incl_compile_mean"
        print(f"bs {bs}: dynamic / static-pow2 steady {ratio('dynamic', 'static-pow2', steady):.2f}x, "
              f"incl. compile {ratio('dynamic', 'static-pow2', incl):.2f}x; dynamic / static-64 incl. compile "
              f"{ratio('dynamic', 'static-64', incl):.2f}x; static-64 compiles "
              f"{a.loc['static-64', 'train_step_compiles_mean']:.1f} "
              f"({a.loc['static-64', 'train_compile_seconds_mean']:.1f} s)")
        run = df[(df["batch_size"] == bs) & (df["method"] == "static-64") & (df["seed"] == 0)]
        if len(run):
            steps = pd.read_csv(os.path.join(run["run_dir"].iloc[0], "steps.csv"))
            after = steps["compiled"].shift(1).fillna(0) > 0
            plain = (steps["compiled"] == 0) & (steps["step"] > 0)
            right_after = steps.loc[plain & after, "combined_ms"].median()
            otherwise = steps.loc[plain & ~after, "combined_ms"].median()
            print(f"  static-64 seed 0: median step {right_after:.1f} ms right after a compiling step vs "
                  f"{otherwise:.1f} ms otherwise")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/quickstart")
