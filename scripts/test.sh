#!/usr/bin/env bash
# Sets everything up, then runs the whole suite: lint, types, tests (servers, bento and container included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BENTOML_DO_NOT_TRACK=True
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
