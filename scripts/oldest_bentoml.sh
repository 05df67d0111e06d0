#!/usr/bin/env bash
# The oldest BentoML release the service supports (1.4.39; the suite runs on the newest 1.4), in a runtime-only
# virtualenv (no torch, no NeMo): a plain `pip install .` of the package must serve. Runs the patches' tests and
# one real `bentoml serve` (curl, BentoML's client, the OpenAI SDK; and a changed BentoML served without the
# patch it breaks) against a tiny model exported by the main virtualenv. Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${OLDEST_BENTOML:-1.4.39}
venv=build/venv-bentoml-$version
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
export PYTHONWARNINGS=ignore
"$venv/bin/python" -m pip install -q --upgrade pip
# the package as a user installs it (KenLM from the wheel setup.sh built), the release under test, the test tools
"$venv/bin/python" -m pip install -q --find-links build/wheels . "bentoml==$version" "pytest>=8" "httpx>=0.27" \
  "openai>=1.50"
if "$venv/bin/python" -c "import torch" 2>/dev/null || "$venv/bin/python" -c "import nemo" 2>/dev/null; then
  echo "oldest_bentoml: torch or NeMo reached the runtime virtualenv" >&2
  exit 1
fi
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
tag=$(BENTOML_HOME=$home .venv/bin/python -m export --config tiny --name range_tiny 2>/dev/null | tail -n 1)
echo "oldest_bentoml: BentoML $("$venv/bin/python" -c 'import bentoml; print(bentoml.__version__)'), model $tag" >&2
ASR_TEST_MODEL=$tag ASR_TEST_BENTOML_HOME=$home "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_patches.py tests/test_bentoml_range.py
