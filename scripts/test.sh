#!/usr/bin/env bash
# Install (if needed) and run the test suite. Extra arguments go to pytest,
# e.g. --run-slow, -k NAME. Two worker processes (pytest-xdist; CI has two
# cores): HWNAS_TEST_WORKERS=0 runs in one process, N in N.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the microcontroller toolchain (apt; about 15 s the first time, instant after): without root or
# sudo it cannot be installed, and the tests that need it skip with the reason
bash scripts/setup_mcu.sh || echo "MCU toolchain not installed: the tests that build for Cortex-M will skip" >&2
venv=${HWNAS_VENV:-.venv}
exec "$venv/bin/python" -m pytest -q -n "${HWNAS_TEST_WORKERS:-2}" "$@"
