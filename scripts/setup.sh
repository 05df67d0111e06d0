#!/usr/bin/env bash
# Sets up everything the project needs on a fresh Debian machine: system packages (espeak-ng and sox for
# test speech, libsndfile), a virtualenv in .venv with torch (CPU build first: a bare `torch` requirement
# would pull a multi-GB CUDA build), NeMo, BentoML, ONNX Runtime and the dev tools. Idempotent.
# BentoML: the newest 1.4 release that resolves, or BENTOML_VERSION (e.g. BENTOML_VERSION=1.4.39).
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng and sox make the tests' Hindi speech; Chromium runs the page's tests (tests/test_ui.py)
need_apt=()
for cmd in espeak-ng sox chromium; do command -v "$cmd" >/dev/null || need_apt+=("$cmd"); done
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" libsndfile1 >&2
  else
    echo "setup: please install ${need_apt[*]} (tests use them to make Hindi speech and drive the page)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
# Nothing to do when the environment was made from these very files (the stamp is a hash of them): a start of
# scripts/serve.sh then costs no time and prints nothing.
stamp=$( (cat pyproject.toml scripts/setup.sh; echo "bentoml ${BENTOML_VERSION:-newest}") | sha256sum | cut -d' ' -f1)
# KenLM's Python module (n-gram LMs in beam search): PyPI has only its source, so it is built here once (g++)
# into build/wheels, installed from there, and packed into bentos from there (bentofile.yaml `wheels`).
kenlm_wheel=build/wheels/kenlm-0.3.0-cp311-cp311-linux_x86_64.whl
if [ -x .venv/bin/python ] && [ "$(cat .venv/.setup-stamp 2>/dev/null)" = "$stamp" ] && [ -f "$kenlm_wheel" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# setuptools' deprecation notices while it builds the editable install are for setuptools' maintainers
export PYTHONWARNINGS=ignore
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
mkdir -p build/wheels
[ -f "$kenlm_wheel" ] || .venv/bin/python -m pip wheel -q --no-deps "kenlm==0.3.0" -w build/wheels
.venv/bin/python -m pip install -q --find-links build/wheels -e ".[export,test]"
# the newest BentoML 1.4 (pip keeps an older one that already satisfies the range), or the one asked for
bentoml_wanted="bentoml>=1.4.39,<1.5"
[ -z "${BENTOML_VERSION:-}" ] || bentoml_wanted="bentoml==$BENTOML_VERSION"
.venv/bin/python -m pip install -q --upgrade "$bentoml_wanted"
# pyctcdecode 0.5.0, the beam search decoder ours replaced, as the tests' reference (tests/test_prefix_search.py)
# only: it declares numpy<2 (it runs on NumPy 2), so without --no-deps pip would downgrade NumPy under the rest.
.venv/bin/python -m pip install -q --no-deps "pyctcdecode==0.5.0" pygtrie 2>&1 | grep -v "dependency resolver\|requires numpy" || true
# nemo_text_processing compiles the written form's (ITN) grammars at export; --no-deps for the reasons in
# pyproject.toml's `export` extra (which installs what it imports).
.venv/bin/python -m pip install -q --no-deps "nemo_text_processing==1.2.0"
echo "$stamp" > .venv/.setup-stamp
echo "setup: ready (.venv)" >&2
