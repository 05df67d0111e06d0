"""The ONNX Runtime session and batched inference: variable-length waveforms in, greedy CTC results out.

Plain Python (no BentoML), so it is testable directly; service.py wraps it in a batchable BentoML API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from service.errors import ModelMismatch
from service.manifest import Manifest
from service.recognition.ctc import GreedyResult, greedy_decode, greedy_path
from service.recognition.device import (
    CPU,
    CUDA,
    GPU_PROVIDERS,
    TENSORRT,
    TENSORRT_PACKAGE,
    DeviceOptions,
    Shapes,
    choose_providers,
    preload_tensorrt,
    provider_options,
)
from service.recognition.lanes import Cores

log = logging.getLogger(__name__)
T = TypeVar("T")

# The greedy head (export/greedy_head.py): logprobs [B, T, V] -> frame_ids, frame_logprob [B, T], on the device
GREEDY_HEAD = Path(__file__).with_name("greedy_head") / "greedy_head.onnx"
ON_CPU = DeviceOptions()  # the GPU settings' defaults (none of them applies on the CPU)


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


class Recognizer:
    """One model's session. On the CPU each segment runs alone at its own length and greedy decoding reads the
    full log-probabilities (exactly NeMo's). On a GPU segments of one bucket share a run padded to fixed shapes
    (`Shapes`), and the greedy head finishes decoding on the device: only each frame's best token and its
    log-probability come back to the host (I/O binding). `shapes` and `device_greedy` force either on or off
    (tests run the GPU code paths on the CPU provider); None: on when a GPU provider is in use."""

    def __init__(
        self,
        model_dir: Path,
        manifest: Manifest,
        device: str = "auto",
        threads: int = 0,
        variant: str = "",
        gpu: DeviceOptions = ON_CPU,
        segment_samples: int = 0,
        shapes: bool | None = None,
        device_greedy: bool | None = None,
        streaming: bool = False,
        lanes: int = 1,
        cores: Cores | None = None,
    ):
        import onnxruntime as ort

        requested = choose_providers(device, ort.get_available_providers(), tensorrt=bool(gpu.tensorrt))
        if CUDA in requested and hasattr(ort, "preload_dlls"):
            try:  # CUDA and cuDNN from the nvidia-* wheels, when installed ([cuda,cudnn] extras)
                ort.preload_dlls()
            except Exception as exc:  # no CUDA libraries here: CPU it is, unless the GPU is demanded
                log.info("no CUDA libraries preloaded: %s", exc)
        if TENSORRT in requested and (why := preload_tensorrt()):
            log.warning("TensorRT asked for (ASR_TENSORRT=%s): %s", gpu.tensorrt, why)
        self.manifest = manifest
        file = manifest.graph.file if not variant else manifest.variants[variant].file
        self.graph_file = file
        inputs = [t.name for t in manifest.graph.inputs]  # checked against the session's in _check_io
        longest = segment_samples or manifest.max_segment_samples
        fixed = Shapes.for_model(gpu.buckets_s, longest, manifest.sample_rate, gpu.batch_max) if gpu.buckets_s else None
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        # ORT's threads spin-wait for the next operator, and by default go on spinning after a run: a core kept
        # busy for nothing while the entry process decodes the next request, or a lane runs (on 2 cores that
        # cost lanes their whole gain). Spinning within a run stays.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        with_options = list(zip(requested, provider_options(requested, gpu, inputs, fixed), strict=True))
        self.session = ort.InferenceSession(str(model_dir / file), options, providers=with_options)
        self.providers: list[str] = list(self.session.get_providers())
        self.on_gpu = any(p in GPU_PROVIDERS for p in self.providers)
        # On the CPU, a second session of one thread that runs in lanes beside others (lanes.py); kept only if
        # lanes prove faster here (calibrate_lanes, at warm-up). Every CPU run goes through `cores`.
        self.lanes, self.lane_session, self.lane_gain = 1, None, 0.0
        self.cores = None if self.on_gpu else cores
        if lanes > 1 and not self.on_gpu:
            lane_options = ort.SessionOptions()
            lane_options.intra_op_num_threads = 1
            self.lane_session = ort.InferenceSession(str(model_dir / file), lane_options, providers=[CPU])
            self.lanes = lanes
            self.cores = cores or Cores(lanes)
        self.not_ready_reason = ""
        if device == "cuda" and CUDA not in self.providers:
            self.not_ready_reason = (
                f"ASR_DEVICE=cuda but ONNX Runtime runs on {self.providers}: the CUDA provider did not load "
                "(check the NVIDIA driver and that the container was started with GPUs)"
            )
        elif TENSORRT in requested and TENSORRT not in self.providers:
            self.not_ready_reason = (
                f"ASR_TENSORRT={gpu.tensorrt} but ONNX Runtime runs on {self.providers}: the TensorRT provider did "
                f"not load (it needs TensorRT 10's libraries, {TENSORRT_PACKAGE}: build the image with "
                "ASR_IMAGE_TENSORRT=1)"
            )
        self._check_io()
        # On CPU, several items in one session run cost more than running them one after another (docs/
        # benchmarks.md, "Batching does not pay on a CPU"). A GPU gains from batching: similar lengths share a run.
        self.single_runs = not self.on_gpu
        self.shapes = fixed if (self.on_gpu if shapes is None else shapes) else None
        self.head = None
        if self.on_gpu if device_greedy is None else device_greedy:
            head_providers = [p for p in self.providers if p != TENSORRT]  # two nodes: not worth an engine
            self.head = ort.InferenceSession(str(GREEDY_HEAD), providers=head_providers)
        # where the log-probabilities stay between the graph and the greedy head (I/O binding's device name)
        self.device_type = "cuda" if CUDA in self.providers else "cpu"
        # streaming recognition's encoder on features (export/streaming.py), where the model has one
        self.stream_session = None
        if streaming and manifest.streaming is not None:
            cuda_only = [(p, o) for p, o in with_options if p != TENSORRT]  # its shapes are not the profile's
            stream_file = str(model_dir / manifest.streaming.encoder_file)
            self.stream_session = ort.InferenceSession(stream_file, options, providers=cuda_only)
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
        """Greedy CTC results in the batch's order. On CPU each item runs alone (solo or in a lane); on a GPU
        similar lengths share a session run (length_buckets)."""
        if self.single_runs:
            return self._each(batch, lambda item, session: self.run_or_fail([item], session)[0])
        results: list[SegmentResult | None] = [None] * len(batch)
        for group in self.groups(batch):
            for i, result in zip(group, self.run_or_fail([batch[i] for i in group]), strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _each(
        self, batch: Sequence[npt.NDArray[np.float32]], fn: Callable[[npt.NDArray[np.float32], Any], T]
    ) -> list[T]:
        """`fn(item, session)` for every item of a CPU batch, in the batch's order, each run solo (the session on
        every core) or in a lane, as `cores` schedules it (a batch's longest items first)."""
        if self.cores is None:
            return [fn(item, self.session) for item in batch]
        lane = self.lane_session

        def job(item: npt.NDArray[np.float32]) -> Callable[[bool], T]:
            return lambda solo: fn(item, self.session if solo or lane is None else lane)

        order = sorted(range(len(batch)), key=lambda i: -batch[i].shape[0])
        done = dict(zip(order, self.cores.run([job(batch[i]) for i in order], exclusive=lane is None), strict=True))
        return [done[i] for i in range(len(batch))]

    def groups(self, batch: Sequence[npt.NDArray[np.float32]]) -> list[list[int]]:
        """Which items share a session run: none on CPU; on a GPU those of one bucket (or, without buckets,
        similar lengths)."""
        if self.single_runs:
            return [[i] for i in range(len(batch))]
        lengths = [a.shape[0] for a in batch]
        return self.shapes.groups(lengths) if self.shapes is not None else length_buckets(lengths)

    def run_or_fail(self, batch: Sequence[npt.NDArray[np.float32]], session: Any = None) -> list[SegmentResult]:
        """run(), with a failure of ONNX Runtime itself turned into failed results (logged once each)."""
        try:
            return self.run(batch, session)
        except SessionRunError as exc:
            log.error("ONNX Runtime failed on %d segment(s) of model %s: %s", len(batch), self.manifest.name, exc)
            # the client gets the kind of failure, never ORT's message (it holds source paths and shapes)
            reason = f"the model could not run ({exc.kind}); the server log has the details"
            return [SegmentResult.failed(reason)] * len(batch)

    def run(self, batch: Sequence[npt.NDArray[np.float32]], session: Any = None) -> list[SegmentResult]:
        """One session run over a zero-padded batch; each item decoded greedily over its own valid frames.
        `session`: the lane session for a run in a lane; None: the main one."""
        if self.head is not None:
            paths = self._greedy_on_device(batch)
        else:
            paths = [greedy_decode(lp, lp.shape[0], self.manifest.blank_id) for lp in self.forward(batch, session)]
        return [
            SegmentResult(
                token_ids=g.token_ids.tolist(),
                first_frame=g.first_frame.tolist(),
                last_frame=g.last_frame.tolist(),
                probability=[round(float(p), 6) for p in g.probability],
                frames=g.frames,
            )
            for g in paths
        ]

    def _padded(
        self, batch: Sequence[npt.NDArray[np.float32]]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The batch zero-padded to its longest item, or on fixed shapes to its bucket and batch class (the
        extra rows are copies of the first item, their results dropped)."""
        lengths = np.array([a.shape[0] for a in batch], dtype=np.int64)
        width = int(lengths.max(initial=1)) or 1
        rows = len(batch)
        if self.shapes is not None:
            width, rows = self.shapes.width(width), self.shapes.rows(rows)
        padded = np.zeros((rows, width), dtype=np.float32)
        for i, audio in enumerate(batch):
            padded[i, : audio.shape[0]] = audio
        if rows > len(batch):
            padded[len(batch) :] = padded[0]
            lengths = np.r_[lengths, np.full(rows - len(batch), lengths[0])]
        return padded, lengths

    def forward(self, batch: Sequence[npt.NDArray[np.float32]], session: Any = None) -> list[npt.NDArray[np.float32]]:
        """One session run over a zero-padded batch: each item's log-probabilities over its valid frames."""
        if not batch:
            return []
        padded, lengths = self._padded(batch)
        try:
            logprobs, out_lengths = (session or self.session).run(
                self.output_names, {self.input_names[0]: padded, self.input_names[1]: lengths}
            )
        except Exception as exc:  # ORT's own error types (Fail, RuntimeException, EPFail, ...) share no base
            raise SessionRunError(type(exc).__name__, str(exc)) from exc
        valid = [max(0, min(int(n), logprobs.shape[1])) for n in out_lengths]
        return [np.ascontiguousarray(logprobs[i, : valid[i]]) for i in range(len(batch))]

    def _greedy_on_device(self, batch: Sequence[npt.NDArray[np.float32]]) -> list[GreedyResult]:
        """The graph's log-probabilities stay on the device (I/O binding) and go through the greedy head; only
        each frame's best token and its log-probability (and the lengths) are copied to the host."""
        if not batch or self.head is None:
            return []
        padded, lengths = self._padded(batch)
        try:
            graph = self.session.io_binding()
            graph.bind_cpu_input(self.input_names[0], padded)
            graph.bind_cpu_input(self.input_names[1], lengths)
            graph.bind_output(self.output_names[0], self.device_type)
            graph.bind_output(self.output_names[1], "cpu")
            self.session.run_with_iobinding(graph)
            logprobs, out_lengths = graph.get_outputs()
            head = self.head.io_binding()
            head.bind_ortvalue_input("logprobs", logprobs)
            head.bind_output("frame_ids", "cpu")
            head.bind_output("frame_logprob", "cpu")
            self.head.run_with_iobinding(head)
            ids, best = head.copy_outputs_to_cpu()
            valid = out_lengths.numpy()
        except Exception as exc:  # as in forward()
            raise SessionRunError(type(exc).__name__, str(exc)) from exc
        frames = ids.shape[1]
        blank = self.manifest.blank_id
        return [greedy_path(ids[i], best[i], max(0, min(int(valid[i]), frames)), blank) for i in range(len(batch))]

    def stream(self, buffers: Sequence[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        """Streaming recognition's buffers (normalised features [n_mels, frames], all of one shape) through the
        encoder graph: per buffer, each output step's best token id and its log-probability, [steps, 2] float32
        (ids are exact in float32). On CPU one run per buffer; on a GPU one run for all. A failed run gives an
        empty [0, 2] array (the stream reports an error)."""
        if self.stream_session is None:
            return [np.zeros((0, 2), np.float32)] * len(buffers)
        groups = [[i] for i in range(len(buffers))] if self.single_runs else [list(range(len(buffers)))]
        out: list[npt.NDArray[np.float32]] = [np.zeros((0, 2), np.float32)] * len(buffers)
        session = self.stream_session

        def run(group: list[int]) -> None:
            features = np.stack([buffers[i] for i in group]).astype(np.float32, copy=False)
            lengths = np.full(len(group), features.shape[2], np.int64)
            try:
                logprobs, steps = session.run(None, {"features": features, "feature_lengths": lengths})
            except Exception as exc:  # as in forward()
                log.error("ONNX Runtime failed on %d stream buffer(s) of %s: %s", len(group), self.manifest.name, exc)
                return
            for row, i in enumerate(group):
                valid = logprobs[row, : int(steps[row])]
                best = valid.argmax(axis=-1)
                out[i] = np.stack([best.astype(np.float32), valid[np.arange(valid.shape[0]), best]], axis=1)

        if self.cores is None:
            for group in groups:
                run(group)
        else:  # the streaming session runs on every core: alone
            self.cores.run([lambda solo, g=g: run(g) for g in groups], exclusive=True)  # type: ignore[misc]
        return out

    def logprobs(self, batch: Sequence[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        """Log-probabilities for beam search, batched like infer(). A failed run gives empty arrays of one
        column (the entry answers 503 `unavailable` for them, like a failed greedy result)."""
        if self.single_runs:
            return self._each(batch, lambda item, session: self._logprobs_or_fail([item], session)[0])
        out: list[npt.NDArray[np.float32]] = [np.zeros((0, 1), np.float32)] * len(batch)
        for group in self.groups(batch):
            for i, lp in zip(group, self._logprobs_or_fail([batch[i] for i in group]), strict=True):
                out[i] = lp
        return out

    def _logprobs_or_fail(
        self, batch: Sequence[npt.NDArray[np.float32]], session: Any = None
    ) -> list[npt.NDArray[np.float32]]:
        try:
            return self.forward(batch, session)
        except SessionRunError as exc:
            log.error("ONNX Runtime failed on %d segment(s) of model %s: %s", len(batch), self.manifest.name, exc)
            return [np.zeros((0, 1), np.float32)] * len(batch)

    def calibrate_lanes(self, seconds: float = 4.0, rounds: int = 3) -> None:
        """Time `lanes` clips of `seconds` solo, one after another, and side by side in lanes (median of
        `rounds`); keep the lanes only if they finish them at least 5 % sooner, else drop their session (this
        model's runs are then always solo)."""
        if self.lane_session is None:
            return
        from concurrent.futures import ThreadPoolExecutor

        rng = np.random.default_rng(1)
        clip = (0.01 * rng.standard_normal(int(seconds * self.manifest.sample_rate))).astype(np.float32)
        lane, n = self.lane_session, self.lanes
        solo_s, lanes_s = [], []
        with ThreadPoolExecutor(n) as threads:
            list(threads.map(lambda _: self.forward([clip], lane), range(n)))  # the first runs allocate
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(n):
                    self.forward([clip])
                solo_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                list(threads.map(lambda _: self.forward([clip], lane), range(n)))
                lanes_s.append(time.perf_counter() - started)
        self.lane_gain = float(np.median(solo_s) / np.median(lanes_s))
        keep = self.lane_gain >= 1.05
        log.info(
            "model %s: %d segments in %d lanes finish in %.2fx less time than solo one after another: %s",
            self.manifest.name, n, n, self.lane_gain, "lanes on" if keep else "lanes off, runs solo",
        )  # fmt: skip
        if not keep:
            self.lanes, self.lane_session = 1, None

    def warmup(self) -> None:
        """The first runs allocate and tune; do them before readiness turns green. On fixed shapes every shape
        serving can meet is run once (cuDNN's search and TensorRT's engine happen here, not in a request)."""
        rate = self.manifest.sample_rate
        rng = np.random.default_rng(0)
        if self.stream_session is not None and self.manifest.streaming is not None:
            spec = self.manifest.streaming
            frames = int(spec.buffer_s * rate / spec.hop_length)
            self.stream([rng.standard_normal((spec.n_mels, frames)).astype(np.float32)])
        if self.shapes is None:
            for seconds in (1.0, 4.0):
                self.infer([(0.01 * rng.standard_normal(int(seconds * rate))).astype(np.float32)] * 2)
            self.calibrate_lanes()
            return
        for rows, width in self.shapes.all():
            clip = (0.01 * rng.standard_normal(width)).astype(np.float32)
            self.run([clip] * rows)
            if self.head is not None:
                self.forward([clip] * rows)  # beam search's path: the full log-probabilities to the host
