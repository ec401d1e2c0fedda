#!/usr/bin/env bash
# The GPU path in one prepared command (at most about 8 minutes on one GPU; needs nothing from the network).
#   tools/gpu_check.sh [--cpu-smoke] [--out DIR]
# Uses .venv/bin/python when it exists (the environment of `make setup`), else python3. See tools/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )"
exec "$PYTHON" tools/gpu_check.py "$@"
