#!/usr/bin/env bash
# Install (if needed) and run the main job on the embedded default: a joint
# architecture x hardware search of the built-in mbv2 space for this machine's
# CPU, accuracy from short training on scikit-learn's bundled digits, latency
# measured. No downloads. Run it again to continue or re-report (--resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${HWNAS_VENV:-.venv}
"$venv/bin/hwnas" search --space mbv2 --target cpu --objectives accuracy,latency_ms \
    --accuracy train --accuracy-option max_steps=30 --budget 12 --pop-size 6 \
    --artifacts 1 --out runs/demo --resume "$@"
