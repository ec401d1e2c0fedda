#!/usr/bin/env bash
# The pretraining step on one GPU, every method: ResNet-50, 224 px, batch 64, bf16 autocast, channels-last.
# Self-contained: installs nothing, uses random images (no data needed). Prints images/s per method and writes
# output/bench/gpu_step_r50.json. Usage (from the repository root, with the environment of `make setup`):
#   tools/gpu_benchmark.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
mkdir -p output/bench
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('GPU:', torch.cuda.get_device_name())"
"$PYTHON" tools/benchmark.py step --depth 50 --size 224 --batch 64 --amp --device cuda --warmup 5 --repeats 20 \
    --json output/bench/gpu_step_r50.json
"$PYTHON" - <<'PY'
import json
r = json.load(open("output/bench/gpu_step_r50.json"))
for name, ips in r["images_per_s"].items():
    print(f"{name:>20}: {ips:8.1f} images/s")
print("goal: houghcl >= 800 images/s on one H100")
PY
