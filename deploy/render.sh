#!/usr/bin/env bash
# Renders the Kubernetes objects for one overlay as plain YAML on stdout:
#   IMAGE=registry.example.com/nemo-ctc-asr:1.0 [KEYS_FILE=keys.txt] bash deploy/render.sh cpu|gpu > asr.yaml
# IMAGE: the image scripts/build.sh made (default nemo-ctc-asr:latest). KEYS_FILE: API keys (one per line, or
# sha256:<hex> of one; README, "Keys"): they become the Secret asr-api-keys, mounted into the pods as the file
# ASR_API_KEYS_FILE reads; the Secret keeps its name, so `kubectl apply` of new keys rotates them in running pods
# (the kubelet refreshes the mounted file; the service re-reads it) without a restart. Needs kustomize, as
# `kubectl kustomize` (kubectl 1.27 or newer) or `kustomize build`.
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
  if [ -n "${KEYS_FILE:-}" ]; then
    cp "$KEYS_FILE" "$work/keys.txt"
    cat <<'KEYS'
secretGenerator:
  - name: asr-api-keys
    files: [keys.txt]
    options:
      disableNameSuffixHash: true # the same Secret, updated in place: keys rotate without new pods
patches:
  - target: {kind: Deployment, name: asr}
    patch: |-
      - op: add
        path: /spec/template/spec/volumes/-
        value: {name: api-keys, secret: {secretName: asr-api-keys, defaultMode: 0440}}
      - op: add
        path: /spec/template/spec/containers/0/volumeMounts/-
        value: {name: api-keys, mountPath: /etc/asr/keys, readOnly: true}
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: ASR_API_KEYS_FILE, value: /etc/asr/keys/keys.txt}
KEYS
  fi
} > "$work/kustomization.yaml"
"${build[@]}" "$work"
