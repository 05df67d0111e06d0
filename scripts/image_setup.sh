#!/usr/bin/env bash
# Run by the image build (bentofile.yaml docker.setup_script) after the bento's Python packages are in
# /app/.venv: pyctcdecode for beam search, without its dependencies (it declares numpy<2 and runs on the
# bento's NumPy 2; pygtrie, its one other need, is in the bento's packages).
set -euo pipefail
uv pip install --python /app/.venv/bin/python --no-deps "pyctcdecode==0.5.0"
