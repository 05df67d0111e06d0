#!/usr/bin/env bash
# Renders the Kubernetes objects for one overlay as plain YAML on stdout:
#   IMAGE=registry.example.com/nemo-ctc-asr:1.0 bash deploy/render.sh cpu|gpu > asr.yaml
# IMAGE: the image scripts/build.sh made (default nemo-ctc-asr:latest). Needs kustomize, as `kubectl
# kustomize` (kubectl 1.27 or newer) or `kustomize build`.
set -euo pipefail
cd "$(dirname "$0")"
overlay=${1:-}
if [ "$overlay" != cpu ] && [ "$overlay" != gpu ]; then
  echo "usage: IMAGE=name:tag bash deploy/render.sh cpu|gpu" >&2
  exit 2
fi
image=${IMAGE:-nemo-ctc-asr:latest}
if command -v kubectl >/dev/null; then
  build=(kubectl kustomize)
elif command -v kustomize >/dev/null; then
  build=(kustomize build)
else
  echo "render: needs kubectl (1.27 or newer) or kustomize on PATH" >&2
  exit 1
fi
# name[:tag] or name@digest; a registry port (host:5000/name) is part of the name
name=$image tag="" digest=""
if [[ $image == *@* ]]; then
  name=${image%@*} digest=${image#*@}
elif [[ ${image##*/} == *:* ]]; then
  name=${image%:*} tag=${image##*:}
fi
# A throw-away kustomization on top of the overlay sets the image (the overlays themselves stay untouched).
work=$(mktemp -d "$PWD/.render-XXXXXX")
trap 'rm -rf "$work"' EXIT
{
  echo "resources: [../overlays/$overlay]"
  echo "images:"
  echo "  - name: nemo-ctc-asr"
  echo "    newName: $name"
  [ -z "$tag" ] || echo "    newTag: \"$tag\""
  [ -z "$digest" ] || echo "    digest: $digest"
} > "$work/kustomization.yaml"
"${build[@]}" "$work"
