#!/usr/bin/env bash
# Install (if needed) and run the main job on the embedded default: train a small weight-sharing supernet of
# the built-in mbv2 space on scikit-learn's bundled digits (once: a second run finds it and starts at once),
# then a joint architecture x hardware search for this machine's CPU with accuracy inherited from it and
# latency measured, and a bundle of the best point holding its weights (fine-tuned alone for 30 epochs), whose manifest records the
# accuracy of the compiled artifact on the held-out split. No downloads. Run it again to continue or
# re-report (--resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${HWNAS_VENV:-.venv}
space=(--space mbv2 --space-option 'resolutions=[32]' --space-option 'widths=[0.25,0.5]')
net=runs/supernet/mbv2-digits.safetensors
"$venv/bin/hwnas" supernet train "${space[@]}" --data digits --epochs 6 --batch-size 32 --out "$net" --resume
"$venv/bin/hwnas" search "${space[@]}" --target cpu --objectives accuracy,latency_ms \
    --accuracy "supernet:$net" --budget 12 --pop-size 6 --artifacts 1 --finetune-epochs 30 --out runs/demo --resume "$@"
for bundle in runs/demo/artifacts/*/; do
    "$venv/bin/python" "$bundle/run.py" --eval "$bundle/test_split.npz"
done
