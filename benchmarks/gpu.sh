#!/usr/bin/env bash
# The GPU comparison (benchmarks/_gpu.py): the book's recipe against ours on one GPU, DDP on two when there are
# two; offline, with nothing but torch and transformers. About 6 minutes on an H200. Figures print as they come,
# the table last; gpu.json and gpu.md go to $OUT (default benchmarks/results).
#
#   bash benchmarks/gpu.sh              # on the GPU machine; needs .gpu-minilm (python benchmarks/_gpu.py --export_minilm .gpu-minilm)
#   bash benchmarks/gpu.sh --dry_run    # the same code on the CPU with a tiny config, in seconds (the tests run this)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
# A hard stop below the lent machine's 8 minutes, so that what was measured before it still prints.
timeout "${GPU_BENCH_TIMEOUT:-450}" "${PYTHON:-python3}" benchmarks/_gpu.py --out "$out" "$@"
