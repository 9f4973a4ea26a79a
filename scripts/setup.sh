#!/usr/bin/env bash
# Create the virtual environment (.venv, or $HWNAS_VENV) and install hwnas with
# its pinned dependencies. Quick when nothing changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HWNAS_VENV:-.venv}
stamp="$venv/.hwnas-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/hwnas" ]; then
    exit 0
fi
echo "setting up $venv (first run: a few minutes) ..." >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
log="$venv/setup.log"
pip() { "$venv/bin/python" -m pip "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "setup failed: pip $*" >&2; exit 1; }; }
: >"$log"
pip install --upgrade pip
# the CPU wheel of torch first: an open range would pull a multi-GB CUDA build
pip install torch==2.13.0
pip install -e ".[test]"
echo "$want" > "$stamp"
echo "set up $venv" >&2
