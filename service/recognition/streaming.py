"""Streaming recognition: NeMo's buffered CTC inference (its `FrameBatchASR`, as
examples/asr/asr_chunked_inference/ctc/speech_to_text_buffered_infer_ctc.py runs it), along a live stream.

NeMo computes un-normalised log-mel features of the whole file (padded at the end with `delay` output steps of
zeros), reads them in chunks (e.g. 1.6 s), slides each chunk into a buffer (e.g. 4 s, first filled with a
constant level), normalises each buffer with its own per-feature mean and standard deviation, runs the
encoder on it, and keeps the argmax of `tokens_per_chunk` output steps starting `delay + 1` steps before the
buffer's end; the kept steps of all buffers, folded as greedy CTC, are the transcript.

Here the same runs as audio arrives: `FeatureStream` computes exactly the frames the whole-file front end would
(each frame once its window's samples are in), `BufferedCTC` makes the buffers and folds the kept steps. The
encoder runs elsewhere (the recognizer's batch queue, so buffers of all open streams share runs); a buffer's
result comes back through `take()`. Plain Python, so it is testable against NeMo directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.manifest import Manifest

NEMO_STD_GUARD = 1e-5  # FeatureFrameBufferer.normalize_frame_buffers' CONSTANT


class StreamingUnsupported(ValueError):
    """The model has no streaming graphs (exported before they existed), or the lengths asked for cannot work."""


@dataclass(frozen=True)
class Geometry:
    """Chunk and buffer in feature frames and output steps, as NeMo's buffered CTC script derives them."""

    rate: int
    hop: int  # samples per feature frame
    half_window: int  # samples a frame needs on each side of its centre (n_fft // 2)
    n_mels: int
    zero_level: float
    chunk_frames: int  # int(chunk_s / window_stride)
    buffer_frames: int
    tokens_per_chunk: int  # ceil(chunk_s / model_stride_s)
    delay: int  # ceil((chunk_s + (buffer_s - chunk_s) / 2) / model_stride_s)
    tail_samples: int  # zeros NeMo appends to the audio: delay output steps
    chunk_s: float
    buffer_s: float

    @classmethod
    def of(cls, manifest: Manifest, chunk_s: float = 0.0, buffer_s: float = 0.0) -> Geometry:
        spec = manifest.streaming
        if spec is None:
            raise StreamingUnsupported(
                f"model {manifest.name} has no streaming graphs: export it again with this version of `python -m "
                "export` (it adds them)"
            )
        chunk_s, buffer_s = chunk_s or spec.chunk_s, buffer_s or spec.buffer_s
        window_stride = spec.hop_length / manifest.sample_rate
        model_stride = manifest.frame_shift_s
        if not (model_stride <= chunk_s < buffer_s <= manifest.max_segment_s):
            raise StreamingUnsupported(
                f"chunk {chunk_s:g} s and buffer {buffer_s:g} s: the chunk must be at least one output step "
                f"({model_stride:g} s) and shorter than the buffer, the buffer at most {manifest.max_segment_s:g} s"
            )
        delay = math.ceil((chunk_s + (buffer_s - chunk_s) / 2) / model_stride)
        return cls(
            rate=manifest.sample_rate,
            hop=spec.hop_length,
            half_window=spec.n_fft // 2,
            n_mels=spec.n_mels,
            zero_level=spec.zero_level,
            chunk_frames=int(chunk_s / window_stride),
            buffer_frames=int(buffer_s / window_stride),
            tokens_per_chunk=math.ceil(chunk_s / model_stride),
            delay=delay,
            tail_samples=int(delay * model_stride * manifest.sample_rate),
            chunk_s=chunk_s,
            buffer_s=buffer_s,
        )


# audio [samples] float32 -> features [n_mels, frames] of the front-end graph over exactly that audio
FrontEnd = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


def frontend_runner(session: object) -> FrontEnd:
    """The export's streaming front-end graph (un-normalised log-mel) as a FrontEnd."""

    def run(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        feeds = {"audio": audio[None, :], "audio_lengths": np.array([audio.shape[0]], np.int64)}
        features, lengths = session.run(["features", "feature_lengths"], feeds)  # type: ignore[attr-defined]
        out: npt.NDArray[np.float32] = features[0, :, : int(lengths[0])]
        return out

    return run


class FeatureStream:
    """Un-normalised log-mel frames of a growing recording, each equal to the whole-recording front end's frame:
    frame t is computed once samples up to t * hop + n_fft / 2 are in (at the end, the front end's own zero
    padding stands for what follows). The front end runs on the new frames' samples with two frames of context
    before them (pre-emphasis and the window's left half need them); only samples still needed are kept."""

    def __init__(self, geometry: Geometry, frontend: FrontEnd) -> None:
        self.g, self.frontend = geometry, frontend
        self.audio = np.zeros(0, np.float32)
        self.offset = 0  # index of self.audio[0] in the recording
        self.frames = 0  # frames emitted so far
        self.samples = 0  # samples received so far

    def push(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """New samples in; the frames they complete out ([n_mels, k], k >= 0)."""
        self.audio = np.concatenate([self.audio, samples.astype(np.float32, copy=False)])
        self.samples += samples.shape[0]
        ready = max(0, (self.samples - self.g.half_window) // self.g.hop + 1)  # frames whose window is all in
        ready = min(ready, self.samples // self.g.hop)  # and never past NeMo's frame count for what is in
        return self._frames(ready, final=False)

    def finish(self) -> npt.NDArray[np.float32]:
        """The recording ended: the remaining frames (NeMo's count: samples // hop), the end zero-padded."""
        return self._frames(self.samples // self.g.hop, final=True)

    def _frames(self, upto: int, final: bool) -> npt.NDArray[np.float32]:
        g = self.g
        if upto <= self.frames:
            return np.zeros((g.n_mels, 0), np.float32)
        start = max(0, (self.frames - 2) * g.hop)  # two frames of context (frames before 2: the true start)
        window = self.audio[start - self.offset :]
        if not final:  # no sample the new frames do not need (the graph would window its own zero padding)
            window = window[: (upto - 1) * g.hop + g.half_window - start]
        features = self.frontend(window)
        first = self.frames - start // g.hop
        out = features[:, first : first + upto - self.frames]
        if out.shape[1] != upto - self.frames:
            raise RuntimeError(f"front end gave {out.shape[1]} frames for {upto - self.frames}")
        self.frames = upto
        keep = max(0, (self.frames - 2) * g.hop)
        self.audio, self.offset = self.audio[keep - self.offset :], keep
        return np.ascontiguousarray(out)


class BufferedCTC:
    """One utterance through NeMo's buffered CTC: feed() audio as it arrives, finish() at its end; each returns
    the normalised buffers to run through the encoder, in order; take() each buffer's per-step best token ids,
    in the same order, and it returns the tokens that buffer adds to the transcript (repeats folded, blanks
    dropped, across buffers as NeMo's greedy_merge folds them)."""

    def __init__(self, geometry: Geometry, frontend: FrontEnd, blank_id: int) -> None:
        self.g, self.blank_id = geometry, blank_id
        self.features = FeatureStream(geometry, frontend)
        self.pending = np.zeros((geometry.n_mels, 0), np.float32)  # frames not yet in a chunk
        self.buffer = np.full((geometry.n_mels, geometry.buffer_frames), geometry.zero_level, np.float32)
        self.previous = blank_id
        self.steps: list[tuple[int, float]] = []  # each emitted token and the log-prob of the step emitting it
        self.finished = False

    @property
    def tokens(self) -> list[int]:
        """The transcript's token ids so far."""
        return [token for token, _ in self.steps]

    def feed(self, samples: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        if self.finished:
            raise RuntimeError("the utterance has ended")
        return self._chunks(self.features.push(samples), final=False)

    def finish(self) -> list[npt.NDArray[np.float32]]:
        """The end of the utterance: NeMo's tail of zeros, the last frames, and the last chunk zero-padded
        (an all-zero chunk when the frames filled the chunks exactly, as NeMo's iterator gives one too)."""
        tail = self.features.push(np.zeros(self.g.tail_samples, np.float32))
        buffers = self._chunks(np.concatenate([tail, self.features.finish()], axis=1), final=True)
        self.finished = True
        return buffers

    def _chunks(self, frames: npt.NDArray[np.float32], final: bool) -> list[npt.NDArray[np.float32]]:
        g = self.g
        self.pending = np.concatenate([self.pending, frames], axis=1)
        buffers = []
        while self.pending.shape[1] >= g.chunk_frames:
            buffers.append(self._slide(self.pending[:, : g.chunk_frames]))
            self.pending = self.pending[:, g.chunk_frames :]
        if final:
            last = np.zeros((g.n_mels, g.chunk_frames), np.float32)
            last[:, : self.pending.shape[1]] = self.pending
            buffers.append(self._slide(last))
            self.pending = self.pending[:, :0]
        return buffers

    def _slide(self, chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """FeatureFrameBufferer: the chunk slides in from the right; the buffer normalised by its own
        per-feature mean and (population) standard deviation, with NeMo's numpy calls."""
        width = chunk.shape[1]
        self.buffer[:, :-width] = self.buffer[:, width:]
        self.buffer[:, -width:] = chunk
        mean = np.mean(self.buffer, axis=1).reshape(self.g.n_mels, 1)
        std = np.std(self.buffer, axis=1).reshape(self.g.n_mels, 1)
        normalised: npt.NDArray[np.float32] = (self.buffer - mean) / (std + NEMO_STD_GUARD)
        return normalised

    def take(self, ids: npt.NDArray[np.int64], logprobs: npt.NDArray[np.float32] | None = None) -> list[int]:
        """One buffer's best token per output step -> the tokens it adds (NeMo keeps steps T-1-delay onward)."""
        t = ids.shape[0]
        lo = max(0, t - 1 - self.g.delay)
        hi = max(lo, t - 1 - self.g.delay + self.g.tokens_per_chunk)
        kept = ids[lo:hi].tolist()
        scores = logprobs[lo:hi].tolist() if logprobs is not None else [0.0] * len(kept)
        added = []
        for p, score in zip(kept, scores, strict=True):
            if (p != self.previous or self.previous == self.blank_id) and p != self.blank_id:
                added.append(int(p))
                self.steps.append((int(p), float(score)))
            self.previous = p
        return added
