#!/usr/bin/env bash
# Install (if needed) and run the test suite. Extra arguments go to pytest,
# e.g. --run-slow, -k NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${HWNAS_VENV:-.venv}
exec "$venv/bin/python" -m pytest -q "$@"
