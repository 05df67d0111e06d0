#!/usr/bin/env bash
# Sets everything up, makes sure the model is in the BentoML model store (exporting the pretrained Hindi
# model through NeMo when it is missing), then serves. ASR_MODEL picks another store entry; ASR_MODELS
# (comma-separated tags) serves several.
#
# Offline, with no model asked for explicitly, the real model cannot be downloaded: the demo model trained
# here on synthetic speech (demo/, its checkpoint committed) is exported through the same verified export and
# served under its own name, saying so. An explicitly requested ASR_MODEL / ASR_MODELS that cannot be had
# still fails: nothing is substituted for a model someone asked for.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BENTOML_DO_NOT_TRACK=${BENTOML_DO_NOT_TRACK:-True}
# two malloc arenas per process, as the bento's image has it (bentofile.yaml envs; docs/operations.md, "Memory")
export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}
DEFAULT_MODEL=stt_hi_conformer_ctc_medium:latest
DEMO_NAME=stt_hi_demo_conformer_ctc
DEMO_CHECKPOINT=demo/$DEMO_NAME.nemo
explicit=${ASR_MODELS:-${ASR_MODEL:-}}

in_store() { .venv/bin/bentoml models get "$1" >/dev/null 2>&1; }

IFS=',' read -ra models <<< "${explicit:-$DEFAULT_MODEL}"
for model in "${models[@]}"; do
  model=$(echo "$model" | tr -d '[:space:]')
  [ -n "$model" ] || continue
  in_store "$model" && continue
  echo "serve: $model is not in the model store (BENTOML_HOME=${BENTOML_HOME:-~/bentoml}); exporting it" >&2
  .venv/bin/python -m export --pretrained "${model%%:*}" && continue
  if [ -z "$explicit" ] && [ -f "$DEMO_CHECKPOINT" ]; then
    if ! in_store "$DEMO_NAME:latest"; then
      echo "serve: exporting the demo model $DEMO_NAME from $DEMO_CHECKPOINT (verified against NeMo like any export)" >&2
      .venv/bin/python -m export --nemo "$DEMO_CHECKPOINT" --name "$DEMO_NAME" --language hi >&2
    fi
    echo "serve: the pretrained model ${model%%:*} could not be downloaded; serving the DEMO model $DEMO_NAME" \
      "(trained here on synthetic speech from one espeak-ng voice, not a model of human speech: demo/MODEL_CARD.md)." \
      "For the real model: run again with network access, or export a local file with" \
      ".venv/bin/python -m export --nemo PATH.nemo --name ${model%%:*}" >&2
    export ASR_MODEL=$DEMO_NAME:latest
    unset ASR_MODELS
    break
  fi
  name=${model%%:*}
  language=$(echo "$name" | sed -n 's/^stt_\([a-z][a-z]\)_.*/ --language \1/p')  # NeMo's names say it: stt_en_...
  cat >&2 <<MSG
serve: the pretrained model could not be downloaded. Serve something else instead:
  a local .nemo file:       .venv/bin/python -m export --nemo PATH.nemo --name $name$language
  the demo model (offline): unset ASR_MODEL and ASR_MODELS and run this command again
  random weights:           .venv/bin/python -m export --config medium --name $name$language
then run this command again.
MSG
  exit 1
done
exec .venv/bin/bentoml serve --host "${HOST:-127.0.0.1}" --port "${PORT:-3000}"
