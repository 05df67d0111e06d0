"""deploy/: the Kubernetes objects render for both overlays and are valid against the OpenAPI schemas of a
current Kubernetes release (offline, kubernetes-validate), wired together as intended; the BentoCloud file is
what `bentoml deploy -f` reads. `podman kube play` of the rendered CPU Deployment runs in test_packaging.py
(it needs the image built there)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import fields
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.server import ROOT

KUBERNETES = "1.35.0"  # a current release among those kubernetes-validate carries (it has up to 1.37)
needs_kustomize = pytest.mark.skipif(
    not (shutil.which("kubectl") or shutil.which("kustomize")), reason="needs kubectl or kustomize"
)


def render(
    overlay: str, image: str = "registry.example.com/speech/nemo-ctc-asr:1.4.0", keys: str = ""
) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["bash", "deploy/render.sh", overlay],
        cwd=ROOT,
        env={**os.environ, "IMAGE": image, **({"KEYS_FILE": keys} if keys else {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), kinds
    return {o["kind"]: o for o in objects}


@needs_kustomize
@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_rendered_objects_are_valid_kubernetes(overlay: str) -> None:
    import kubernetes_validate

    objects = render(overlay)
    for o in objects:
        kubernetes_validate.validate(o, KUBERNETES, strict=True)  # raises on any unknown or ill-typed field
    found = by_kind(objects)
    assert set(found) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    deployment, config = found["Deployment"], found["ConfigMap"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example.com/speech/nemo-ctc-asr:1.4.0"
    # every setting, from the ConfigMap the Deployment reads
    assert set(config["data"]) == {f"ASR_{f.name.upper()}" for f in fields(Settings)}
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    Settings.from_env({k: str(v) for k, v in config["data"].items()})  # values the service accepts
    # probes
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz" and startup["periodSeconds"] * startup["failureThreshold"] >= 300
    # non-root, read-only root filesystem, writable /tmp
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in pod["spec"]["volumes"]}
    assert set(mounts.values()) <= volumes
    # /tmp writable; on GPUs TensorRT's engines on their own volume, where ASR_TENSORRT_CACHE points
    assert set(mounts) == ({"/tmp"} if overlay == "cpu" else {"/tmp", config["data"]["ASR_TENSORRT_CACHE"]})
    # the Service, the budget and the autoscaler reach these pods
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert found["Service"]["spec"]["selector"].items() <= labels.items()
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = found["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = found["HorizontalPodAutoscaler"]["spec"]["metrics"]
    resources = container["resources"]
    if overlay == "cpu":
        assert config["data"]["ASR_DEVICE"] == "cpu" and metric["resource"]["name"] == "cpu"
        assert "cpu" in resources["requests"] and "nvidia.com/gpu" not in resources.get("limits", {})
    else:
        assert config["data"]["ASR_DEVICE"] == "cuda" and resources["limits"]["nvidia.com/gpu"] == 1
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "asr_segments_in_flight"
        rules = yaml.safe_load((ROOT / "deploy" / "prometheus-adapter-rules.yaml").read_text())["rules"]
        assert rules[0]["name"]["as"] == "asr_segments_in_flight"


@needs_kustomize
@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_api_keys_come_from_a_secret_mounted_as_the_keys_file(overlay: str, tmp_path: Any) -> None:
    """KEYS_FILE=... render.sh: the keys become the Secret asr-api-keys (no hash suffix: `kubectl apply` of new
    keys updates it in place, and the kubelet refreshes the mounted file), mounted read-only where
    ASR_API_KEYS_FILE points; the objects stay valid; without KEYS_FILE there is no Secret."""
    import base64

    import kubernetes_validate

    keys = tmp_path / "keys.txt"
    keys.write_text("# ops\nkey-one\nsha256:" + "ab" * 32 + "\n", encoding="utf-8")
    objects = render(overlay, keys=str(keys))
    for o in objects:
        kubernetes_validate.validate(o, KUBERNETES, strict=True)
    found = {o["kind"]: o for o in objects}
    secret = found["Secret"]
    assert secret["metadata"]["name"] == "asr-api-keys"
    assert base64.b64decode(secret["data"]["keys.txt"]).decode() == keys.read_text(encoding="utf-8")
    pod = found["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "asr-api-keys" and mount["readOnly"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ASR_API_KEYS_FILE"] == mount["mountPath"] + "/keys.txt"
    assert "Secret" not in {o["kind"] for o in render(overlay)}
    assert found["ConfigMap"]["data"]["ASR_API_KEYS"] == ""  # keys never in the ConfigMap


@needs_kustomize
def test_render_refuses_what_it_cannot_render() -> None:
    out = subprocess.run(["bash", "deploy/render.sh", "tpu"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr
    digest = "sha256:" + "a" * 64
    (deployment,) = [o for o in render("cpu", f"nemo-ctc-asr@{digest}") if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"nemo-ctc-asr@{digest}"
    assert not list((ROOT / "deploy").glob(".render-*"))  # its scratch directory is gone


def test_bentocloud_file_is_what_bentoml_deploy_reads() -> None:
    """Structured as BentoML's own client structures it for `bentoml deploy -f` (unknown fields refused);
    its services are this bento's, its settings real ones."""
    from bentoml._internal.cloud.schemas.schemasv2 import CreateDeploymentSchema
    from bentoml._internal.utils.cattr import bentoml_cattr

    config = yaml.safe_load((ROOT / "deploy" / "bentocloud.yaml").read_text())
    schema = bentoml_cattr.structure(config, CreateDeploymentSchema)
    assert set(schema.services) == {"asr", "asr_recognizer"}
    known = {f"ASR_{f.name.upper()}" for f in fields(Settings)}
    assert {e.name for e in schema.envs or []} <= known
    for service in schema.services.values():
        assert service.scaling is not None and 1 <= (service.scaling.min_replicas or 0) <= (
            service.scaling.max_replicas or 0
        )
        assert set(service.config_overrides) <= {"traffic"} and set(service.config_overrides["traffic"]) <= {
            "concurrency",
            "timeout",
            "max_concurrency",
            "external_queue",
        }
    assert bentoml_cattr.unstructure(schema)["services"]["asr"]["config_overrides"]["traffic"]["concurrency"] > 0
