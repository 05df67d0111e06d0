"""The ONNX Runtime session and batched inference: variable-length waveforms in, greedy CTC results out.

Plain Python (no BentoML), so it is testable directly; service.py wraps it in a batchable BentoML API.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from service.errors import ModelMismatch
from service.manifest import Manifest
from service.recognition.ctc import greedy_decode

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class SegmentResult(BaseModel):
    """Greedy CTC output for one segment (what travels back from the recognizer service)."""

    token_ids: list[int]
    first_frame: list[int]
    last_frame: list[int]
    probability: list[float]
    frames: int
    # Set when ONNX Runtime failed on this segment (e.g. device memory exhausted): the entry answers 503
    # `unavailable`. A result, not an exception, so that the batch's other segments are still answered.
    error: str = ""

    @classmethod
    def failed(cls, reason: str) -> SegmentResult:
        return cls(token_ids=[], first_frame=[], last_frame=[], probability=[], frames=0, error=reason)


class SessionRunError(RuntimeError):
    """ONNX Runtime raised while running the graph (out of device memory, a kernel failure, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind  # ORT's exception type: Fail, RuntimeException, EPFail, ...


def length_buckets(lengths: Sequence[int], max_padding: float = 0.25) -> list[list[int]]:
    """Indices grouped for one session run each: longest first, a group closes before its zero padding would
    exceed `max_padding` of the audio it holds. A batch of 2-s and 30-s clips would otherwise spend most of
    its compute on zeros (in a mixed batch of 16, up to ~90 %)."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        group = groups[-1] if groups else []
        if group and lengths[group[0]] * (len(group) + 1) > (1 + max_padding) * (
            sum(lengths[j] for j in group) + lengths[i]
        ):
            group = []
        if not group:
            groups.append(group)
        group.append(i)
    return groups


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


def choose_providers(device: str, available: Sequence[str], gpu: bool | None = None) -> list[str]:
    """cpu: CPU. cuda: CUDA first, always (not ready without it). auto: CUDA when there is a GPU to use it."""
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        return [CUDA, CPU]
    if CUDA in available and (nvidia_gpu_present() if gpu is None else gpu):
        return [CUDA, CPU]
    return [CPU]


class Recognizer:
    def __init__(self, model_dir: Path, manifest: Manifest, device: str = "auto", threads: int = 0, variant: str = ""):
        import onnxruntime as ort

        requested = choose_providers(device, ort.get_available_providers())
        if CUDA in requested and hasattr(ort, "preload_dlls"):
            try:  # CUDA and cuDNN from the nvidia-* wheels, when installed ([cuda,cudnn] extras)
                ort.preload_dlls()
            except Exception as exc:  # no CUDA libraries here: CPU it is, unless the GPU is demanded
                log.info("no CUDA libraries preloaded: %s", exc)
        self.manifest = manifest
        file = manifest.graph.file if not variant else manifest.variants[variant].file
        self.graph_file = file
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_dir / file), options, providers=requested)
        self.providers: list[str] = list(self.session.get_providers())
        self.not_ready_reason = ""
        if device == "cuda" and CUDA not in self.providers:
            self.not_ready_reason = (
                f"ASR_DEVICE=cuda but ONNX Runtime runs on {self.providers}: the CUDA provider did not load "
                "(check the NVIDIA driver and that the container was started with GPUs)"
            )
        self._check_io()
        # On CPU, several items in one session run cost more than running them one after another (measured with
        # the medium model on 2 cores: length-sorted batches of 2 ran at 0.63x, of 4 at 0.40x the audio per
        # second of single runs; docs/benchmarks.md). A GPU gains from batching: there, similar lengths share a run.
        self.single_runs = CUDA not in self.providers
        log.info("model %s (%s) on %s", manifest.name, file, self.providers)

    def _check_io(self) -> None:
        want_in = [t.name for t in self.manifest.graph.inputs]
        want_out = [t.name for t in self.manifest.graph.outputs]
        got_in = [i.name for i in self.session.get_inputs()]
        got_out = [o.name for o in self.session.get_outputs()]
        if sorted(want_in) != sorted(got_in) or not set(want_out) <= set(got_out):
            raise ModelMismatch(
                f"the graph's inputs {got_in} / outputs {got_out} do not match the manifest's "
                f"inputs {want_in} / outputs {want_out}"
            )
        self.input_names, self.output_names = want_in, want_out[:2]

    def infer(self, batch: Sequence[npt.NDArray[np.float32]]) -> list[SegmentResult]:
        """Greedy CTC results in the batch's order. On CPU each item runs alone; on a GPU similar lengths share a
        session run (length_buckets)."""
        results: list[SegmentResult | None] = [None] * len(batch)
        for group in self.groups(batch):
            for i, result in zip(group, self.run_or_fail([batch[i] for i in group]), strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def groups(self, batch: Sequence[npt.NDArray[np.float32]]) -> list[list[int]]:
        """Which items share a session run: none on CPU, similar lengths on a GPU."""
        if self.single_runs:
            return [[i] for i in range(len(batch))]
        return length_buckets([a.shape[0] for a in batch])

    def run_or_fail(self, batch: Sequence[npt.NDArray[np.float32]]) -> list[SegmentResult]:
        """run(), with a failure of ONNX Runtime itself turned into failed results (logged once each)."""
        try:
            return self.run(batch)
        except SessionRunError as exc:
            log.error("ONNX Runtime failed on %d segment(s) of model %s: %s", len(batch), self.manifest.name, exc)
            # the client gets the kind of failure, never ORT's message (it holds source paths and shapes)
            reason = f"the model could not run ({exc.kind}); the server log has the details"
            return [SegmentResult.failed(reason)] * len(batch)

    def run(self, batch: Sequence[npt.NDArray[np.float32]]) -> list[SegmentResult]:
        """One session run over a zero-padded batch; each item decoded greedily over its own valid frames."""
        results = []
        for logprobs in self.forward(batch):
            g = greedy_decode(logprobs, logprobs.shape[0], self.manifest.blank_id)
            results.append(
                SegmentResult(
                    token_ids=g.token_ids.tolist(),
                    first_frame=g.first_frame.tolist(),
                    last_frame=g.last_frame.tolist(),
                    probability=[round(float(p), 6) for p in g.probability],
                    frames=g.frames,
                )
            )
        return results

    def forward(self, batch: Sequence[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        """One session run over a zero-padded batch: each item's log-probabilities over its valid frames."""
        if not batch:
            return []
        lengths = np.array([a.shape[0] for a in batch], dtype=np.int64)
        padded = np.zeros((len(batch), int(lengths.max(initial=1)) or 1), dtype=np.float32)
        for i, audio in enumerate(batch):
            padded[i, : audio.shape[0]] = audio
        try:
            logprobs, out_lengths = self.session.run(
                self.output_names, {self.input_names[0]: padded, self.input_names[1]: lengths}
            )
        except Exception as exc:  # ORT's own error types (Fail, RuntimeException, EPFail, ...) share no base
            raise SessionRunError(type(exc).__name__, str(exc)) from exc
        valid = [max(0, min(int(n), logprobs.shape[1])) for n in out_lengths]
        return [np.ascontiguousarray(logprobs[i, : valid[i]]) for i in range(len(batch))]

    def logprobs(self, batch: Sequence[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        """Log-probabilities for beam search, batched like infer(). A failed run gives empty arrays of one
        column (the entry answers 503 `unavailable` for them, like a failed greedy result)."""
        out: list[npt.NDArray[np.float32]] = [np.zeros((0, 1), np.float32)] * len(batch)
        for group in self.groups(batch):
            try:
                for i, lp in zip(group, self.forward([batch[i] for i in group]), strict=True):
                    out[i] = lp
            except SessionRunError as exc:
                log.error("ONNX Runtime failed on %d segment(s) of model %s: %s", len(group), self.manifest.name, exc)
        return out

    def warmup(self) -> None:
        """The first runs allocate and tune; do them before readiness turns green."""
        rate = self.manifest.sample_rate
        rng = np.random.default_rng(0)
        for seconds in (1.0, 4.0):
            self.infer([(0.01 * rng.standard_normal(int(seconds * rate))).astype(np.float32)] * 2)
