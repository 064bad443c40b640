#!/usr/bin/env bash
# Runs the whole test suite (offscreen Qt, CPU) in the environment scripts/setup.sh made.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export QT_QPA_PLATFORM=offscreen
python -m pytest -q tests "$@"
