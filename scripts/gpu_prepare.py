"""Prepare what the GPU check (scripts/gpu_checks.sh) carries to a bare GPU machine: the 10k QM9
subset as a qm9pack-layout CSV (the machine has no qm9pack and cannot download) and the wheels of
the packages its image lacks. Writes .gpu/ (ignored by git). Run here, once:

    .venv/bin/python scripts/gpu_prepare.py

then, on the device tool: run(command="bash scripts/gpu_checks.sh", carry=[".gpu"], timeout_s=540).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pandas as pd

from gnn_batching.config import DatasetSpec
from gnn_batching.data import load_dataset
from gnn_batching.data.qm9 import qm9pack_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, ".gpu")
# what the GPU image (python 3.12, jax/flax/optax/orbax/pandas present) lacks
WHEELS = ["jraph==0.0.6.dev0", "ase==3.29.0", "vesin==0.6.2"]


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    exclude = subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
    exclude = os.path.join(ROOT, exclude)
    os.makedirs(os.path.dirname(exclude), exist_ok=True)
    with open(exclude, "a+", encoding="utf-8") as fh:
        fh.seek(0)
        if "/.gpu/" not in fh.read():
            with open(exclude, "a", encoding="utf-8") as out:
                out.write("/.gpu/\n")
    ds = load_dataset(DatasetSpec(name="qm9", limit=10_000), verbose=False)
    keep = set(ds.store.ids.tolist())
    frames = [pd.read_csv(f) for f in qm9pack_files()]
    rows = pd.concat(frames)
    sub = rows[rows["XYZ_file"].str.removesuffix(".xyz").isin(keep)]
    path = os.path.join(OUT, "qm9_10k.csv")
    sub.to_csv(path, index=False)
    print(f"{path}: {len(sub)} molecules, {os.path.getsize(path) / 1e6:.1f} MB")
    for old in glob.glob(os.path.join(OUT, "*.whl")):
        os.remove(old)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux2014_x86_64", "--platform", "any", "-d", OUT, *WHEELS]
    subprocess.run(cmd, check=True)
    total = sum(os.path.getsize(f) for f in glob.glob(os.path.join(OUT, "*"))) / 2**20
    print(f".gpu/: {total:.1f} MiB to carry (the limit is 64 MiB with the working tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
