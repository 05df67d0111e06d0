"""Session fixtures: generated NeMo models (random, seeded weights) exported into a temporary model store."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The model store must point at a temporary directory before bentoml is first imported.
_HOME = tempfile.mkdtemp(prefix="asr-test-bentoml-")
os.environ["BENTOML_HOME"] = _HOME
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# What some tests need from the machine, and which tests cannot run without it. scripts/setup.sh installs them
# (as root, with apt-get); a run without one fails at once, saying which, unless ASR_ALLOW_MISSING_TOOLS=1 lets
# those tests skip (a skip must be asked for, never silent).
TOOLS = {
    "espeak-ng": ("espeak-ng", "the Hindi test speech: most end-to-end tests"),
    "sox": ("sox", "the Hindi test speech: most end-to-end tests"),
    "kubectl or kustomize": (("kubectl", "kustomize"), "tests/test_deploy.py, the kube play test"),
    "podman or docker": (("podman", "docker"), "the container tests of tests/test_packaging.py"),
    "chromium": ("chromium", "tests/test_ui.py (the page in a browser)"),
}


def missing_tools() -> list[str]:
    import shutil

    missing = []
    for name, (commands, needed_by) in TOOLS.items():
        names = (commands,) if isinstance(commands, str) else commands
        if not any(shutil.which(c) for c in names):
            missing.append(f"{name} ({needed_by})")
    return missing


def pytest_configure(config: Any) -> None:
    missing = missing_tools()
    if missing and os.environ.get("ASR_ALLOW_MISSING_TOOLS") != "1":
        raise pytest.UsageError(
            "not installed: " + "; ".join(missing) + ". Run scripts/setup.sh as root to install them, or set "
            "ASR_ALLOW_MISSING_TOOLS=1 to skip the tests that need them."
        )


def pytest_report_header(config: Any) -> list[str]:
    from importlib.metadata import version

    import onnxruntime as ort

    names = ("nemo_toolkit", "torch", "onnxruntime-gpu", "bentoml", "numpy")
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {version(name)}")
        except Exception:
            versions.append(f"{name} absent")
    return [", ".join(versions), f"ORT providers: {ort.get_available_providers()}", f"BENTOML_HOME={_HOME}"]


# A GPU demanded and none visible, on any host (a GPU host's included): the service must never turn ready.
NO_GPU = {"ASR_DEVICE": "cuda", "CUDA_VISIBLE_DEVICES": "-1"}


@dataclass
class Exported:
    """A generated model, its verified artifact and its store tag."""

    config: str
    model: Any  # the NeMo model (eval mode)
    manifest: Any  # service.manifest.Manifest
    tag: str
    directory: Path  # where model.onnx and manifest.json were written


_cache: dict[str, Exported] = {}


def export_config(config: str, tmp_root: Path) -> Exported:
    """Build and export once per session (each takes ~10 s)."""
    if config not in _cache:
        from export.__main__ import quiet_nemo
        from export.pipeline import Options, run
        from export.sources import from_config

        quiet_nemo()
        loaded = from_config(config, None, tmp_root / f"{config}-build")
        manifest, tag, directory = run(loaded, Options(workdir=tmp_root / config))
        assert tag is not None
        _cache[config] = Exported(config, loaded.model, manifest, tag, directory)
    return _cache[config]


@pytest.fixture(scope="session")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def tiny_bpe(export_root: Path) -> Exported:
    return export_config("tiny", export_root)


@pytest.fixture(scope="session")
def tiny_char(export_root: Path) -> Exported:
    return export_config("tiny_char", export_root)


@pytest.fixture(scope="session")
def tiny_fast(export_root: Path) -> Exported:
    return export_config("tiny_fastconformer", export_root)


DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "demo" / "stt_hi_demo_conformer_ctc.nemo"


@pytest.fixture(scope="session")
def demo(export_root: Path) -> Exported:
    """The demo model (demo/: trained here on synthetic speech, it hears) through the normal export."""
    if "demo" not in _cache:
        from export.__main__ import quiet_nemo
        from export.pipeline import Options, run
        from export.sources import from_nemo

        quiet_nemo()
        loaded = from_nemo(DEMO_CHECKPOINT, None)
        manifest, tag, directory = run(loaded, Options(name="stt_hi_demo_conformer_ctc", workdir=export_root / "demo"))
        assert tag is not None
        _cache["demo"] = Exported("demo", loaded.model, manifest, tag, directory)
    return _cache["demo"]


@pytest.fixture(scope="session", params=["tiny", "tiny_char", "tiny_fastconformer"])
def any_model(request: pytest.FixtureRequest, export_root: Path) -> Iterator[Exported]:
    yield export_config(request.param, export_root)
