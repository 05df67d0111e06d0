"""The streaming graphs (service/recognition/streaming.py runs them): NeMo's buffered CTC inference needs the
front end and the encoder apart, because it normalises each buffer of features with that buffer's own
statistics. Both come from the same model as model.onnx and are verified against NeMo's own `FrameBatchASR`.

- stream_frontend.onnx: audio [B, S], audio_lengths [B] -> features [B, n_mels, T] (log-mel, not normalised:
  NeMo's buffered script sets normalize="None"), feature_lengths [B];
- stream_encoder.onnx: features [B, n_mels, T], feature_lengths [B] -> logprobs [B, T', V+1], logprobs_lengths.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from export.frontend import LogMelFrontEnd
from export.graph import _nemo_export_mode, example_audio, trace
from service.manifest import StreamingSpec
from service.recognition.streaming import BufferedCTC

FRONTEND_FILE = "stream_frontend.onnx"
ENCODER_FILE = "stream_encoder.onnx"
CHUNK_S, BUFFER_S = 1.6, 4.0  # NeMo's script's defaults for CTC models


class StreamingExportError(ValueError):
    """The streaming graphs do not reproduce NeMo's buffered inference."""


class FeaturesToLogProbs(nn.Module):
    """features [B, n_mels, T], lengths [B] -> logprobs [B, T', V+1], lengths [B]: the encoder and CTC head."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder, self.decoder = model.encoder, model.decoder

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded, encoded_lengths = self.encoder.forward_for_export(features, lengths)
        return self.decoder(encoder_output=encoded), encoded_lengths.to(torch.int64)


def supported(model: Any) -> str:
    """Why the model cannot stream, or ""."""
    fb = model.preprocessor.featurizer
    if fb.exact_pad:
        return "exact_pad front ends are not streamed"
    if fb.n_fft // 2 < fb.hop_length:
        return "the STFT window is shorter than two hops"
    return ""


# What NeMo's FeatureFrameBufferer fills a new buffer with for log-mel features: "Log-Melspectrogram value for
# zero signal", log(2^-24). Its check reads `asr_model.preprocessor.log`, which AudioToMelSpectrogramPreprocessor
# does not have (NeMo 3.0: the flag is on its featurizer), so NeMo falls back to 0.0, a loud frame in log-mel:
# the first buffers' statistics are then mostly padding and the start of every utterance is lost (demo model,
# 20 held-out sentences: WER 67.2 % with 0.0, 18.4 % with -16.635; offline 13.6 %). We use the level NeMo means;
# nemo_buffered() runs NeMo's FrameBatchASR with it, everything else NeMo's own code.
NEMO_LOG_ZERO = -16.635


def zero_level(model: Any) -> float:
    """The level a new buffer starts filled with: NeMo's for log-mel features (its featurizer's `log`), else 0."""
    return NEMO_LOG_ZERO if bool(model.preprocessor.featurizer.log) else 0.0


def export_streaming(model: Any, out_dir: Path, sample_rate: int) -> None:
    """Trace both graphs (as model.onnx is traced)."""
    model.eval()
    frontend = LogMelFrontEnd(model.preprocessor.featurizer).eval()
    frontend.normalize = False
    encoder = FeaturesToLogProbs(model).eval()
    audio, lengths = example_audio(sample_rate)
    batch, frames = {0: "batch"}, {0: "batch", 2: "frames"}
    with _nemo_export_mode(model):
        features = frontend(audio, lengths)
        axes = {
            "audio": {0: "batch", 1: "samples"},
            "audio_lengths": batch,
            "features": frames,
            "feature_lengths": batch,
        }
        trace(frontend, (audio, lengths), out_dir / FRONTEND_FILE, axes)
        axes = {
            "features": frames,
            "feature_lengths": batch,
            "logprobs": {0: "batch", 1: "steps"},
            "logprobs_lengths": batch,
        }
        trace(encoder, features, out_dir / ENCODER_FILE, axes)


def nemo_buffered(model: Any, audio: npt.NDArray[np.float32], chunk_s: float, buffer_s: float) -> list[int]:
    """NeMo's own buffered CTC inference of one recording (FrameBatchASR, as speech_to_text_buffered_infer_ctc.py
    drives it), its buffers starting at the level NeMo means (zero_level): the token ids of its transcript."""
    import soundfile as sf
    from nemo.collections.asr.parts.utils.streaming_utils import FrameBatchASR

    fb = model.preprocessor.featurizer
    model_stride_s = fb.hop_length * _subsampling(model) / fb.sample_rate
    tokens_per_chunk = math.ceil(chunk_s / model_stride_s)
    delay = math.ceil((chunk_s + (buffer_s - chunk_s) / 2) / model_stride_s)
    # FrameBatchASR reads `tokenizer` (only to turn ids into text, which is not compared here): character
    # models have none, so they get a stand-in for the call
    shim = not hasattr(model, "tokenizer")
    if shim:
        object.__setattr__(model, "tokenizer", None)
    try:
        asr = FrameBatchASR(model, frame_len=chunk_s, total_buffer=buffer_s, batch_size=1)
    finally:
        if shim:
            object.__delattr__(model, "tokenizer")
    asr.frame_bufferer.ZERO_LEVEL_SPEC_DB_VAL = zero_level(model)  # reset() below refills the buffers with it
    captured: list[list[int]] = []

    def keep_ids(preds: list[int]) -> str:  # greedy_merge's fold, keeping the ids instead of their text
        ids: list[int] = []
        previous = asr.blank_id
        for p in preds:
            if (p != previous or previous == asr.blank_id) and p != asr.blank_id:
                ids.append(int(p))
            previous = p
        captured.append(ids)
        return ""

    asr.greedy_merge = keep_ids  # type: ignore[method-assign]
    # FrameBatchASR runs the model as it finds it, and NeMo's transcribe() leaves the encoder in training mode
    # (its unfreeze() calls train()): dropout on, and BatchNorm updating its statistics with every buffer. Run in
    # eval mode, as NeMo's script does (it calls eval() and never transcribe()), and leave each module's mode as
    # it was.
    modes = {name: module.training for name, module in model.named_modules()}
    model.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "a.wav"
            sf.write(path, audio, int(fb.sample_rate), subtype="FLOAT")
            asr.reset()
            asr.read_audio_file(str(path), delay, model_stride_s)
            with torch.inference_mode():
                asr.transcribe(tokens_per_chunk, delay)
    finally:
        for name, module in model.named_modules():
            module.training = modes[name]
    return captured[-1]


def _subsampling(model: Any) -> int:
    from export.describe import subsampling_factor

    return int(subsampling_factor(model))


def ours_buffered(
    out_dir: Path,
    spec: StreamingSpec,
    manifest_like: Any,
    audio: npt.NDArray[np.float32],
    piece: int = 4000,
    after: Callable[[BufferedCTC, int], None] | None = None,
) -> list[int]:
    """The service's streaming recognition (service/recognition/streaming.py) of one recording fed in pieces of
    `piece` samples, with both graphs on ONNX Runtime's CPU provider: its token ids. `after(stream, samples)`
    is called after each buffer's result, with the samples fed when that buffer was made."""
    import onnxruntime as ort

    from service.recognition.streaming import Geometry, frontend_runner

    manifest = manifest_like.model_copy(update={"streaming": spec})
    geometry = Geometry.of(manifest)
    frontend = ort.InferenceSession(str(out_dir / spec.frontend_file), providers=["CPUExecutionProvider"])
    encoder = ort.InferenceSession(str(out_dir / spec.encoder_file), providers=["CPUExecutionProvider"])
    stream = BufferedCTC(geometry, frontend_runner(frontend), manifest.blank_id)

    def run(buffers: list[npt.NDArray[np.float32]], samples: int) -> None:
        for b in buffers:
            feeds = {"features": b[None], "feature_lengths": np.array([b.shape[1]], np.int64)}
            logprobs = encoder.run(["logprobs"], feeds)[0][0]
            stream.take(logprobs.argmax(axis=-1))
            if after is not None:
                after(stream, samples)

    for start in range(0, audio.shape[0], piece):
        run(stream.feed(audio[start : start + piece]), min(audio.shape[0], start + piece))
    run(stream.finish(), audio.shape[0])
    return stream.tokens


def verify_streaming(model: Any, out_dir: Path, manifest: Any, clips: list[npt.NDArray[np.float32]]) -> StreamingSpec:
    """Export both graphs and compare the service's streaming recognition with NeMo's FrameBatchASR on `clips`:
    every clip's tokens must be identical (else StreamingExportError)."""
    fb = model.preprocessor.featurizer
    spec = StreamingSpec(
        frontend_file=FRONTEND_FILE,
        encoder_file=ENCODER_FILE,
        hop_length=int(fb.hop_length),
        n_fft=int(fb.n_fft),
        n_mels=int(fb.nfilt),
        zero_level=zero_level(model),
        chunk_s=CHUNK_S,
        buffer_s=BUFFER_S,
        verified="",
    )
    same = 0
    for audio in clips:
        want = nemo_buffered(model, audio, CHUNK_S, BUFFER_S)
        got = ours_buffered(out_dir, spec, manifest, audio)
        same += want == got
    seconds = sum(c.shape[0] for c in clips) / int(fb.sample_rate)
    verified = (
        f"tokens equal to NeMo FrameBatchASR (chunk {CHUNK_S:g} s, buffer {BUFFER_S:g} s) on {same}/{len(clips)} "
        f"clips ({seconds:.0f} s), fed in 0.25-s pieces"
    )
    if same != len(clips):
        raise StreamingExportError(f"the streaming graphs do not reproduce NeMo's buffered inference: {verified}")
    return spec.model_copy(update={"verified": verified})
