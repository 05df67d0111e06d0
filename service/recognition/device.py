"""Where the graph runs and with which options: the providers (CPU, CUDA, TensorRT), their settings, and on a
GPU the fixed shapes every run is padded to.

A GPU pays per new input shape: cuDNN searches convolution algorithms for it, TensorRT needs it inside its
profile, and ONNX Runtime's allocator grows for it. Segments are padded to a few fixed lengths (buckets) and
batches to a few sizes (classes), all run once at start-up, so serving meets only shapes it has seen.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (CUDA, TENSORRT)

CUDNN_SEARCH = {"exhaustive": "EXHAUSTIVE", "heuristic": "HEURISTIC", "default": "DEFAULT"}


@dataclass(frozen=True)
class DeviceOptions:
    """How the recognizer uses a GPU (ASR_* settings; on the CPU none of it applies)."""

    tf32: bool = False  # allow TF32 matrix products (Ampere and later): faster, no longer exact fp32
    cudnn_search: str = "exhaustive"  # cuDNN convolution search: exhaustive, heuristic or default
    tensorrt: str = ""  # "": CUDA provider only; fp32 or fp16: TensorRT first, CUDA for what it cannot run
    tensorrt_cache: str = ""  # directory for TensorRT's engines and timing cache (reused across starts)
    buckets_s: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # () pads each run to its own longest
    batch_max: int = 16  # the largest batch the batcher forms: the largest batch class


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU this process can use: the driver's device nodes and its CUDA library (a container started
    with GPUs has both). onnxruntime-gpu lists the CUDA provider as available on any host, and trying it on
    one without a GPU prints a screenful of library errors at every start."""
    import ctypes
    import glob

    if not glob.glob("/dev/nvidia[0-9]*"):
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


TENSORRT_PACKAGE = "tensorrt-cu13-libs==10.16.1.11"  # TensorRT 10 for CUDA 13: what ORT 1.31's provider links


def preload_tensorrt() -> str:
    """TensorRT's libraries from NVIDIA's pip wheel (TENSORRT_PACKAGE, module `tensorrt_libs`), loaded globally so
    that ONNX Runtime's TensorRT provider finds them (as onnxruntime.preload_dlls() does for CUDA and cuDNN).
    Returns why not, or ""."""
    import ctypes
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("tensorrt_libs")
    if spec is None or not spec.submodule_search_locations:
        return f"TensorRT's libraries are not installed ({TENSORRT_PACKAGE})"
    folder = Path(next(iter(spec.submodule_search_locations)))
    for name in ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10"):
        for path in sorted(folder.glob(name + "*"))[:1]:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                return f"{path.name} did not load: {exc}"
    return ""


def choose_providers(
    device: str, available: Sequence[str], gpu: bool | None = None, tensorrt: bool = False
) -> list[str]:
    """cpu: CPU. cuda: CUDA first, always (not ready without it). auto: CUDA when there is a GPU to use it.
    With TensorRT asked for, it goes before CUDA wherever CUDA would be used."""
    if device == "cpu":
        return [CPU]
    if device != "cuda" and not (CUDA in available and (nvidia_gpu_present() if gpu is None else gpu)):
        return [CPU]
    return [TENSORRT, CUDA, CPU] if tensorrt else [CUDA, CPU]


class Shapes:
    """The fixed shapes of GPU runs: each segment padded to the shortest bucket that holds it, each batch to
    the smallest class (1, 2, 4, ... up to the batcher's largest batch) that holds it."""

    def __init__(self, buckets: Sequence[int], batch_max: int) -> None:
        self.buckets = sorted(set(buckets))
        classes = {batch_max}
        size = 1
        while size < batch_max:
            classes.add(size)
            size *= 2
        self.classes = sorted(classes)

    @classmethod
    def for_model(cls, buckets_s: Sequence[float], segment_samples: int, rate: int, batch_max: int) -> Shapes:
        """Buckets in samples, below the model's longest segment, and that segment itself as the last, so every
        segment the entry sends fits one."""
        samples = [round(s * rate) for s in buckets_s]
        return cls([*(n for n in samples if 0 < n < segment_samples), segment_samples], batch_max)

    def width(self, longest: int) -> int:
        """Samples a run is padded to (a segment longer than every bucket runs at its own length)."""
        i = bisect.bisect_left(self.buckets, longest)
        return self.buckets[i] if i < len(self.buckets) else longest

    def rows(self, items: int) -> int:
        """Rows a run is padded to (copies of its first item fill the rest)."""
        i = bisect.bisect_left(self.classes, items)
        return self.classes[i] if i < len(self.classes) else items

    def groups(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices sharing a run: those in the same bucket, at most the largest class at a time; longest
        bucket first, each in arrival order."""
        by_width: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            by_width.setdefault(self.width(n), []).append(i)
        top = self.classes[-1]
        return [g[k : k + top] for _, g in sorted(by_width.items(), reverse=True) for k in range(0, len(g), top)]

    def all(self) -> list[tuple[int, int]]:
        """Every (rows, width) a run can have: what warm-up runs."""
        return [(rows, width) for width in self.buckets for rows in self.classes]


def provider_options(
    providers: Sequence[str], options: DeviceOptions, inputs: Sequence[str], shapes: Shapes | None
) -> list[dict[str, str]]:
    """Each provider's options, in order. CUDA: TF32 off unless allowed (ONNX Runtime's default is on, so fp32
    matrix products would round to 10-bit mantissas on Ampere and later); the cuDNN search mode. TensorRT: fp16
    or not, engines and timing cache kept in `tensorrt_cache`, one shape profile spanning every bucket and
    class (`inputs`: the graph's audio and length inputs)."""
    out: list[dict[str, str]] = []
    for name in providers:
        if name == CUDA:
            out.append(
                {"use_tf32": "1" if options.tf32 else "0", "cudnn_conv_algo_search": CUDNN_SEARCH[options.cudnn_search]}
            )
        elif name == TENSORRT:
            trt = {"trt_fp16_enable": "1" if options.tensorrt == "fp16" else "0"}
            if options.tensorrt_cache:
                trt |= {
                    "trt_engine_cache_enable": "1",
                    "trt_engine_cache_path": options.tensorrt_cache,
                    "trt_timing_cache_enable": "1",
                    "trt_timing_cache_path": options.tensorrt_cache,
                }
            if shapes is not None:
                audio, lengths = inputs
                profile = {
                    "min": (shapes.classes[0], shapes.buckets[0]),
                    "opt": (shapes.classes[len(shapes.classes) // 2], shapes.buckets[len(shapes.buckets) // 2]),
                    "max": (shapes.classes[-1], shapes.buckets[-1]),
                }
                for which, (rows, width) in profile.items():
                    trt[f"trt_profile_{which}_shapes"] = f"{audio}:{rows}x{width},{lengths}:{rows}"
            out.append(trt)
        else:
            out.append({})
    return out
