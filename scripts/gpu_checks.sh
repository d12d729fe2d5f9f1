#!/usr/bin/env bash
# Issue 22's GPU checks in ONE command (about 5-6 minutes on an H100/H200 (a CPU dry run: ~9); untried on a GPU so far): run on a device machine with
#   run(command="bash scripts/gpu_checks.sh", carry=[".gpu"], timeout_s=540)
# after `.venv/bin/python scripts/gpu_prepare.py` here (the 10k QM9 subset and the missing wheels).
# Prints, and writes to $OUT/gpu_checks.json:
#   1. bench pipeline: host path vs device-resident path vs K=8 steps per call (same batches), for
#      dynamic, packed and ragged autobatch (the one-graph model on packed's batches);
#   2. whole runs (dynamic, bs 128, SchNet and MPEU): the new path (device store, K=8, prefetch
#      auto) and today's (host, K=1, prefetch 0): steady graphs/s against the device-only step;
#   3. the compilation cache across a sweep's cells: compile seconds cold vs warm.
# A CPU dry run here: STEPS=20 CACHE_STEPS=5 OUT=/tmp/gpuout bash scripts/gpu_checks.sh
set -euo pipefail
OUT=${OUT:-/tmp/gpu_checks_out}
mkdir -p "$OUT"
STEPS=${STEPS:-600}
CACHE_STEPS=${CACHE_STEPS:-100}
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 GNN_BATCHING_DATA=$WORK/data
if [ -d .gpu ] && ls .gpu/*.whl >/dev/null 2>&1 && ! python3 -c "import jraph, ase" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
PY=${PY:-python3}
G="$PY -m gnn_batching.cli"
SRC=$PWD/.gpu/qm9_10k.csv
DATA=(--set dataset.source=$SRC --set dataset.limit=null --set train.eval_every=0 --set "train.eval_splits=[test]")
$PY -c "import jax; print('jax', jax.__version__, jax.devices())"

echo "== 1. bench pipeline"
# one shape per model and method (static-64 would compile ~16 shapes per path, ~5 s each on a GPU);
# packed vs autobatch: the hand-batched model vs the one-graph model in ragged mode, same batches (issue 24)
$G bench pipeline --dataset qm9 --source "$SRC" --models schnet mpeu --methods dynamic packed autobatch \
  --batch-sizes 128 --json > "$WORK/pipeline.json"

echo "== 2. whole runs, new path vs today's"
for model in schnet mpeu; do
  $G run configs/qm9.yaml "${DATA[@]}" --set model.name=$model --set batching.batch_size=128 \
    --set train.num_train_steps=$STEPS --out "$WORK/runs/$model-new" > /dev/null
  $G run configs/qm9.yaml "${DATA[@]}" --set model.name=$model --set batching.batch_size=128 \
    --set train.num_train_steps=$STEPS --set dataset.placement=host --set train.steps_per_call=1 \
    --set batching.prefetch=0 --out "$WORK/runs/$model-old" > /dev/null
done

echo "== 3. compilation cache across a sweep's cells (cold, then warm)"
cat > "$WORK/cache.yaml" <<YAML
name: cache
output_dir: $WORK/cold
base:
  dataset: {name: qm9, source: $SRC, graph: fully-connected, target: U0_atomization}
  model: {name: schnet}
  train: {num_train_steps: $CACHE_STEPS, eval_every: 0, eval_splits: [test], compilation_cache: $WORK/jaxcache}
grid:
  batching.method: [dynamic]
  batching.batch_size: [32, 64, 128]
YAML
$G sweep "$WORK/cache.yaml" > /dev/null
$G sweep "$WORK/cache.yaml" --set output_dir=$WORK/warm > /dev/null

$PY - "$WORK" "$OUT" <<'PY'
import glob, json, os, sys
work, out = sys.argv[1], sys.argv[2]
res = {"pipeline": json.load(open(os.path.join(work, "pipeline.json"))), "runs": {}, "cache": {}}
def f(x, fmt=".3f"):
    return "-" if x is None else format(x, fmt)
def rng(pair):
    return "-".join(f(x, ".2f") for x in pair)
print("bench pipeline (median ms per step):")
for r in res["pipeline"]:
    print(f"  {r['model']:7} {r['method']:10} host {f(r['host_ms'])}  device {f(r['device_ms'])}  device-only "
          f"{f(r['device_only_ms'])}  K={r['k']} {f(r['device_k_ms'])}  device/host {f(r['device_speedup'], '.2f')}x  "
          f"K {f(r['k_speedup'], '.2f')}x  K/host {f(r['k_over_host'], '.2f')}x  host overhead "
          f"{f(r['host_overhead_fraction'], '.0%')}  (block ranges: device/host {rng(r['device_speedup_range'])}, "
          f"K/host {rng(r['k_over_host_range'])})")
for d in sorted(glob.glob(os.path.join(work, "runs", "*"))):
    s = json.load(open(os.path.join(d, "summary.json")))
    only = s["real_graphs_per_batch_mean"] / (s["device_step_ms"] / 1e3)
    res["runs"][os.path.basename(d)] = {k: s.get(k) for k in ("graphs_per_s", "graphs_per_s_incl_compile",
        "device_step_ms", "host_overhead_fraction", "placement", "steps_per_call", "prefetch", "wait_fraction",
        "combined_ms_median", "train_compile_seconds", "real_graphs_per_batch_mean")}
    res["runs"][os.path.basename(d)]["device_only_graphs_per_s"] = only
bench = {(r["model"], r["method"]): r for r in res["pipeline"]}
for model in ("schnet", "mpeu"):
    hand, rag = bench.get((model, "packed")), bench.get((model, "autobatch"))
    if hand and rag:
        print(f"{model}: ragged autobatch / hand-batched packed, same batches: device-only step "
              f"{hand['device_only_ms'] / rag['device_only_ms']:.2f}x, whole step (device path) "
              f"{hand['device_ms'] / rag['device_ms']:.2f}x")
for model in ("schnet", "mpeu"):
    new, old = res["runs"][f"{model}-new"], res["runs"][f"{model}-old"]
    print(f"{model}: new path {new['graphs_per_s']:.0f} graphs/s steady = {new['graphs_per_s'] / new['device_only_graphs_per_s']:.2f}x "
          f"its device-only step ({new['device_only_graphs_per_s']:.0f}); today's {old['graphs_per_s']:.0f} = "
          f"{old['graphs_per_s'] / old['device_only_graphs_per_s']:.2f}x; new / today's = "
          f"{new['graphs_per_s'] / old['graphs_per_s']:.2f}x (incl. compile {new['graphs_per_s_incl_compile'] / old['graphs_per_s_incl_compile']:.2f}x)")
for kind in ("cold", "warm"):
    cells = [json.load(open(p)) for p in glob.glob(os.path.join(work, kind, "runs", "*", "summary.json"))]
    if not cells:
        cells = [json.load(open(p)) for p in glob.glob(os.path.join(work, kind, "**", "summary.json"), recursive=True)]
    res["cache"][kind] = {"cells": len(cells), "compile_s": sum(r["compile_seconds"] for r in cells),
                          "cache_hits": sum(r["compile_cache_hits"] for r in cells),
                          "train_wall_s": sum(r["train_wall_s"] for r in cells)}
c, w = res["cache"]["cold"], res["cache"]["warm"]
print(f"compilation cache over {c['cells']} cells: compile s cold {c['compile_s']:.1f} -> warm {w['compile_s']:.1f} "
      f"({w['cache_hits']} cache hits); train_wall_s {c['train_wall_s']:.1f} -> {w['train_wall_s']:.1f}")
json.dump(res, open(os.path.join(out, "gpu_checks.json"), "w"), indent=1)
PY

# 4. the GPU scatter-add remedy (jaxlib 0.10.2-0.11.0): a contended scatter and our readout, off and on
for fix in 0 1; do
  GNN_BATCHING_SCATTER_FIX=$fix python scripts/scatter_check.py --json | tee "$OUT/scatter_fix_$fix.json"
done
