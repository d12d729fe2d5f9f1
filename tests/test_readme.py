"""The README's Python examples run as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _block(marker: str) -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith(marker)]
    assert len(blocks) == 1, f"README has {len(blocks)} blocks starting with {marker!r}"
    return blocks[0]


def test_autobatch_example_runs_with_one_compiled_step(tmp_path):
    code = _block("# autobatch example")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "GNN_BATCHING_DATA": str(tmp_path / "data")}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"loss ([0-9.]+), compiled variants: (\d+)", r.stdout)
    assert m and float(m.group(1)) < 10 and int(m.group(2)) == 1, r.stdout
