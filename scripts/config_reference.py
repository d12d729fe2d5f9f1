"""Write docs/config.md, the config reference, from the schema (gnn_batching/config/).

    python scripts/config_reference.py          # rewrite docs/config.md
    python scripts/config_reference.py --check  # exit 1 if docs/config.md is out of date

A test runs the check, so the reference never drifts from the schema.
"""

from __future__ import annotations

import os
import sys

from gnn_batching.config import config_reference

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "config.md")

if __name__ == "__main__":
    text = config_reference()
    if "--check" in sys.argv:
        with open(PATH, encoding="utf-8") as fh:
            sys.exit(0 if fh.read() == text else 1)
    with open(PATH, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {PATH}")
