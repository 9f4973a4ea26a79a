#!/usr/bin/env bash
# Install (if needed) and run the main job on the embedded default: the CPU
# target and the built-in mbv2 space, no downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${HWNAS_VENV:-.venv}
"$venv/bin/hwnas" compile --space mbv2 --genome '[0,0,0,1,1,1,2,1,1,0,1,1,1,2,1,0,0,0,2,0]' \
    --target cpu --out runs/demo --overwrite "$@"
"$venv/bin/python" runs/demo/run.py
