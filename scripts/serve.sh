#!/usr/bin/env bash
# Sets everything up, makes sure the model is in the BentoML model store (exporting the pretrained Hindi
# model through NeMo when it is missing), then serves. ASR_MODEL picks another store entry; ASR_MODELS
# (comma-separated tags) serves several.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BENTOML_DO_NOT_TRACK=${BENTOML_DO_NOT_TRACK:-True}
IFS=',' read -ra models <<< "${ASR_MODELS:-${ASR_MODEL:-stt_hi_conformer_ctc_medium:latest}}"
for model in "${models[@]}"; do
  model=$(echo "$model" | tr -d '[:space:]')
  [ -n "$model" ] || continue
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
done
exec .venv/bin/bentoml serve --host "${HOST:-127.0.0.1}" --port "${PORT:-3000}"
