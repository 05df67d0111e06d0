#!/usr/bin/env bash
# Builds the bento (offline) and its OCI image with whatever engine this machine has (docker, else podman).
#   ASR_MODEL=<store tag> scripts/build.sh [--bento-only] [IMAGE]   (default model stt_hi_conformer_ctc_medium)
#   ASR_MODELS=<tag>,<tag>,... scripts/build.sh ...                  (several models; the first is the default)
#   ASR_IMAGE_TENSORRT=1 scripts/build.sh ...   the bento and image also carry TensorRT 10's libraries (ASR_TENSORRT)
# Prints the bento tag, then the image name, as its last lines.
set -euo pipefail
cd "$(dirname "$0")/.."
BENTOML=${BENTOML:-.venv/bin/bentoml}
models=${ASR_MODELS:-${ASR_MODEL:-stt_hi_conformer_ctc_medium:latest}}
bento_only=0
if [ "${1:-}" = --bento-only ]; then bento_only=1; shift; fi
image=${1:-nemo-ctc-asr:latest}
# Pin each model's concrete version into the bento; the bento serves them unless ASR_MODEL(S) says otherwise.
resolved=""
IFS=',' read -ra wanted <<< "$models"
for model in "${wanted[@]}"; do
  model=$(echo "$model" | tr -d '[:space:]')
  [ -n "$model" ] || continue
  tag=$("$BENTOML" models get "$model" -o json 2>/dev/null \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["name"] + ":" + m["version"])' 2>/dev/null || true)
  [ -n "$tag" ] || { echo "build: model $model is not in the store (BENTOML_HOME=${BENTOML_HOME:-~/bentoml}); export it first" >&2; exit 1; }
  resolved=${resolved:+$resolved,}$tag
done
[ -n "$resolved" ] || { echo "build: no model given" >&2; exit 1; }
bentofile=bentofile.yaml
if [ "${ASR_IMAGE_TENSORRT:-0}" = 1 ]; then
  # the same bento plus NVIDIA's TensorRT wheel (about 2 GB more in the image); the package pin lives in
  # service/recognition/device.py, beside the code that loads it
  bentofile=build/bentofile.tensorrt.yaml
  mkdir -p build
  "$(dirname "$BENTOML")/python" - "$bentofile" <<'PY'
import sys, yaml
from service.recognition.device import TENSORRT_PACKAGE
spec = yaml.safe_load(open("bentofile.yaml"))
spec["python"]["packages"].append(TENSORRT_PACKAGE)
spec.setdefault("labels", {})["tensorrt"] = TENSORRT_PACKAGE.split("==")[1]
yaml.safe_dump(spec, open(sys.argv[1], "w"), sort_keys=False, allow_unicode=True)
PY
fi
bento=$(env -u ASR_MODEL -u ASR_MODELS BENTOML_NO_LOCAL_URL=1 BENTOML_DO_NOT_TRACK=True \
  "$BENTOML" build -f "$bentofile" --arg "models=$resolved" -o tag | sed -n 's/^__tag__://p')
echo "build: bento $bento (models $resolved)" >&2
if [ "$bento_only" = 1 ]; then echo "$bento"; exit 0; fi
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  backend=docker
elif command -v podman >/dev/null; then
  backend=podman
else
  echo "build: neither docker nor podman is available; the bento is built, the image is not" >&2
  echo "$bento"
  exit 2
fi
echo "build: building image $image with $backend" >&2
# Without a registry, podman must find the base locally: its short-name alias for python:3.11-slim is
# docker.io/library/python, so give a local localhost/python:3.11-slim (see shared/container) that name too.
if [ "$backend" = podman ] && podman image exists localhost/python:3.11-slim \
   && ! podman image exists docker.io/library/python:3.11-slim; then
  podman tag localhost/python:3.11-slim docker.io/library/python:3.11-slim
fi
"$BENTOML" containerize "$bento" --backend "$backend" -t "$image" >&2
echo "$bento"
echo "$image"
