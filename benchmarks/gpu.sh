#!/usr/bin/env bash
# The GPU comparisons, offline. Figures print as they come, the table last; the json and md go to $OUT (default
# benchmarks/results).
#
# benchmarks/_gpu.py: the book's recipe against ours as hand-written loops on one GPU, DDP on two when there are
# two, with nothing but torch and transformers (about 6 minutes on an H200; gpu.json, gpu.md).
#   bash benchmarks/gpu.sh              # on the GPU machine; needs .gpu-minilm (python benchmarks/_gpu.py --export_minilm .gpu-minilm)
#   bash benchmarks/gpu.sh --dry_run    # the same code on the CPU with a tiny config, in seconds (the tests run this)
#
# benchmarks/_gpu_trainer.py: the project's own trainer as a user launches it (`accelerate launch
# trainers/full_finetune.py`), the book's recipe as flags against its defaults and --torch_compile; needs the
# project's packages (about 7 minutes on an H200; gpu-trainer.json, gpu-trainer.md).
#   bash benchmarks/gpu.sh --trainer [--dry_run --accuracy_model FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
script=benchmarks/_gpu.py
if [[ "${1:-}" == "--trainer" ]]; then
    script=benchmarks/_gpu_trainer.py
    shift
fi
# A hard stop below the lent machine's 10 minutes a command, so that what was measured before it still prints.
timeout "${GPU_BENCH_TIMEOUT:-540}" "${PYTHON:-python3}" "$script" --out "$out" "$@"
