#!/usr/bin/env bash
# Sets everything up, then runs the whole suite: lint, types, tests (servers, bento and container included), on
# the newest BentoML 1.4 release and, for the patches and one served end to end, on the oldest supported one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BENTOML_DO_NOT_TRACK=True
# The container test builds and runs the image: with no Docker engine, podman is prepared when the
# workplace's helper is beside the checkout (it installs podman and a local python:3.11-slim base image).
if ! (command -v docker >/dev/null && docker info >/dev/null 2>&1) && [ -f ../shared/container/prepare-podman.sh ]; then
  eval "$(bash ../shared/container/prepare-podman.sh)"
fi
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# the oldest supported BentoML (1.4.39) in a runtime-only virtualenv: the patches' tests and a real serve
bash scripts/oldest_bentoml.sh
