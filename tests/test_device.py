"""Finding the GPU and loading CUDA, without one: what the code looks at (the driver's device nodes, libcuda),
faked in turn, and what the recognizer asks of ONNX Runtime when a GPU is there or demanded."""

from __future__ import annotations

import ctypes
import glob
from typing import Any

import pytest

from service.recognition import device
from service.recognition.device import CPU, CUDA, choose_providers, nvidia_gpu_present
from tests.conftest import Exported


@pytest.mark.parametrize(
    ("nodes", "libcuda", "present"),
    [
        ([], True, False),
        (["/dev/nvidia0"], False, False),
        (["/dev/nvidia0"], True, True),
        (["/dev/nvidia3"], True, True),
    ],
)
def test_a_gpu_is_its_device_node_and_libcuda(
    monkeypatch: pytest.MonkeyPatch, nodes: list[str], libcuda: bool, present: bool
) -> None:
    def cdll(name: str) -> Any:
        if name == "libcuda.so.1" and not libcuda:
            raise OSError("libcuda.so.1: cannot open shared object file")
        return object()

    monkeypatch.setattr(glob, "glob", lambda pattern: nodes if pattern == "/dev/nvidia[0-9]*" else [])
    monkeypatch.setattr(ctypes, "CDLL", cdll)
    assert nvidia_gpu_present() is present


def test_auto_chooses_cuda_where_a_gpu_is() -> None:
    available = [CUDA, CPU]
    assert choose_providers("auto", available, gpu=True) == [CUDA, CPU]
    assert choose_providers("auto", available, gpu=False) == [CPU]
    assert choose_providers("auto", [CPU], gpu=True) == [CPU]  # a CPU-only onnxruntime: nothing to try


@pytest.mark.parametrize(
    ("device_name", "gpu", "preloads"), [("cuda", False, 1), ("auto", True, 1), ("auto", False, 0), ("cpu", True, 0)]
)
def test_cuda_libraries_are_preloaded_when_cuda_is_tried(
    monkeypatch: pytest.MonkeyPatch, tiny_bpe: Exported, device_name: str, gpu: bool, preloads: int
) -> None:
    """onnxruntime.preload_dlls() (CUDA and cuDNN from NVIDIA's wheels) runs exactly when the CUDA provider will be
    tried: ASR_DEVICE=cuda, or auto on a host with a GPU. Its failure (no CUDA here) is no error: the session falls
    back to the CPU, and a demanded GPU makes the recognizer not ready."""
    import onnxruntime as ort

    from service.recognition import recognizer

    calls: list[int] = []

    def preload(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        raise RuntimeError("no CUDA libraries on this host")

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(
        recognizer, "choose_providers", lambda d, a, tensorrt=False: choose_providers(d, a, gpu=gpu, tensorrt=tensorrt)
    )
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    if device.nvidia_gpu_present():
        pytest.skip("a GPU is here: its CUDA provider would load")
    r = recognizer.Recognizer(tiny_bpe.directory, tiny_bpe.manifest, device=device_name)
    assert len(calls) == preloads
    assert r.providers == [CPU]
    assert bool(r.not_ready_reason) == (device_name == "cuda")
