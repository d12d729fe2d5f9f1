#!/usr/bin/env bash
# The README's batching benchmark: full QM9 (fully connected), every method, four batch sizes.
set -euo pipefail
gnn-batching bench batching --dataset qm9 --batch-sizes 16 32 64 128 --repeats 2 "$@"
