#!/usr/bin/env bash
# Sets everything up, makes sure the model is in the BentoML model store (exporting the pretrained Hindi
# model through NeMo when it is missing), then serves. ASR_MODEL picks another store entry.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BENTOML_DO_NOT_TRACK=${BENTOML_DO_NOT_TRACK:-True}
model=${ASR_MODEL:-stt_hi_conformer_ctc_medium:latest}
if ! .venv/bin/bentoml models get "$model" >/dev/null 2>&1; then
  echo "serve: $model is not in the model store (BENTOML_HOME=${BENTOML_HOME:-~/bentoml}); exporting it" >&2
  if ! .venv/bin/python -m export --pretrained "${model%%:*}"; then
    cat >&2 <<MSG
serve: the pretrained model could not be downloaded. Serve something else instead:
  a local .nemo file:       .venv/bin/python -m export --nemo PATH.nemo --name ${model%%:*}
  a demo (random weights):  .venv/bin/python -m export --config medium --name ${model%%:*}
then run this command again.
MSG
    exit 1
  fi
fi
if [ ! -f service/service.py ]; then
  echo "serve: $model is in the store; the HTTP service (service/service.py) is not built yet." >&2
  exit 0
fi
exec .venv/bin/bentoml serve --host "${HOST:-127.0.0.1}" --port "${PORT:-3000}"
