"""Prove the ONNX graph equal to NeMo before anything is registered.

For every verification clip we compare, against NeMo itself:
- the greedy CTC token sequence and text of NeMo's own `transcribe()` (batch size 1);
- the frame log-probabilities of that same hypothesis (NeMo 3.0 keeps them in `y_sequence`; older NeMo:
  `forward()` on the clip alone), over its valid frames;
and we run all clips as one zero-padded batch through the graph and compare each item with its run alone.

Tolerance (fp32): 1e-3 on log-probabilities. Measured against a float64 run of NeMo's own preprocessor, our
features and NeMo's fp32 features are both ~2e-5 away on speech and noise (the convolution STFT sums in a
different order than torch's FFT; neither is more exact). Near digital silence the log amplifies rounding:
on -80 dBFS noise NeMo's own fp32 features are 4e-3 from float64, so no fp32 implementation can promise 1e-3
there; the verification set therefore stops at -60 dBFS, and tests check quieter input by tokens. A frame
whose argmax differs is admissible only when NeMo's own top two log-probs there are closer than the
tolerance (a tie), and different tokens only in a clip that has such a tie. Non-finite output is refused
outright (NaN compares false, so it would slip through any maximum).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.manifest import ParityReport
from service.recognition.ctc import collapse, frame_argmax, greedy_decode
from service.recognition.tokens import Detokenizer

FP32_TOLERANCE = 1e-3
log = logging.getLogger(__name__)

Audio = npt.NDArray[np.float32]
Lengths = npt.NDArray[np.int64]
RunGraph = Callable[[npt.NDArray[np.float32], Lengths], tuple[npt.NDArray[np.float32], Lengths]]

# Sentences spoken by espeak-ng's Hindi voice when it is installed.
HINDI_SENTENCES = ["नमस्ते आप कैसे हैं", "भारत एक विशाल और सुंदर देश है। हम कल सुबह बाज़ार जाएँगे"]


class ParityError(RuntimeError):
    """The graph does not reproduce NeMo; the message says where."""


@dataclass(frozen=True)
class Clip:
    label: str
    audio: Audio


def speech_like(seconds: float, sample_rate: int, seed: int) -> Audio:
    """A voiced, syllable-paced signal with moving formants: exercises the model like speech does."""
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + rng.uniform(0, 60)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = [500 + 300 * np.sin(2 * np.pi * r * t + rng.uniform(0, 6)) for r in (1.3, 2.1)]
    out = np.zeros(n)
    for h in range(1, 30):
        freq = h * f0
        gain = sum(np.exp(-(((freq - f) / 180.0) ** 2)) for f in formants) + 0.05
        out += gain * np.sin(h * phase) / h
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None) ** 0.5
    out = out * envelope + 0.003 * rng.standard_normal(n)
    result: Audio = (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)
    return result


def espeak_hindi(text: str, sample_rate: int) -> Audio | None:
    """Real Hindi speech from espeak-ng (resampled with soxr), or None when espeak-ng is absent."""
    if shutil.which("espeak-ng") is None:
        return None
    import soundfile as sf
    import soxr

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", "hi", "-w", str(wav), text], check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32")
    resampled: Audio = np.asarray(soxr.resample(audio, rate, sample_rate), dtype=np.float32)
    return resampled


# The service's default segment length (ASR_SEGMENT_S): the longest audio it sends to the graph at once, so
# the longest clip every graph and variant is proven on (per-feature sums over its 3,000 frames are where a
# half-precision front end would overflow).
LONGEST_CLIP_S = 30.0


def verification_clips(sample_rate: int, extra: Sequence[Path] = (), max_samples: int | None = None) -> list[Clip]:
    """Speech (espeak-ng if present), speech-like and noise clips from 0.5 s to the segment length (or the
    graph's limit, if shorter), plus user files (refused when longer than the graph supports)."""
    rng = np.random.default_rng(1234)
    longest = min(LONGEST_CLIP_S, (max_samples or 10**12) / sample_rate)
    clips = [
        Clip("speech-like 0.5 s", speech_like(0.5, sample_rate, 1)),
        Clip("speech-like 2.3 s", speech_like(2.3, sample_rate, 2)),
        Clip("speech-like 6.1 s", speech_like(6.1, sample_rate, 3)),
        Clip(f"speech-like {longest:g} s", speech_like(longest, sample_rate, 4)),
        Clip("white noise 1.1 s", (0.1 * rng.standard_normal(int(1.1 * sample_rate))).astype(np.float32)),
        Clip("quiet noise 3.0 s", (1e-3 * rng.standard_normal(3 * sample_rate)).astype(np.float32)),
    ]
    for i, sentence in enumerate(HINDI_SENTENCES):
        audio = espeak_hindi(sentence, sample_rate)
        if audio is not None:
            clips.append(Clip(f"espeak-ng hi #{i}", audio))
    if extra:
        import soundfile as sf
        import soxr

        for path in extra:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            mono = audio.mean(axis=1)
            if rate != sample_rate:
                mono = soxr.resample(mono, rate, sample_rate)
            if max_samples is not None and mono.shape[0] > max_samples:
                raise ParityError(
                    f"verification audio {path.name} lasts {mono.shape[0] / sample_rate:.1f} s, longer than the "
                    f"{max_samples / sample_rate:.1f} s the graph supports (raise it with --max-segment-s)"
                )
            clips.append(Clip(path.name, np.asarray(mono, dtype=np.float32)))
    return clips


def pad_batch(clips: Sequence[Audio]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    lengths = np.array([c.shape[0] for c in clips], dtype=np.int64)
    batch = np.zeros((len(clips), int(lengths.max(initial=1))), dtype=np.float32)
    for i, c in enumerate(clips):
        batch[i, : c.shape[0]] = c
    return batch, lengths


def nemo_reference(model: Any, clips: Sequence[Clip]) -> list[tuple[npt.NDArray[np.float32], int, list[int], str]]:
    """Per clip, alone, from NeMo's own transcribe(): log-probs, frame count, greedy tokens and text."""
    import soundfile as sf
    import torch

    blank_id = model.decoder.num_classes_with_blank - 1
    sample_rate = int(model.preprocessor.featurizer.sample_rate)
    with tempfile.TemporaryDirectory(prefix="asr-verify-") as tmp:
        # Files, not arrays: transcribe() pads arrays shorter than 1 s to 1 s (TranscriptionTensorDataset)
        # but reads files as they are, and a served file must match transcribe() on that file.
        # 32-bit float WAV keeps every sample exactly.
        paths = []
        for i, clip in enumerate(clips):
            path = Path(tmp) / f"clip{i}.wav"
            sf.write(path, clip.audio, sample_rate, subtype="FLOAT")
            paths.append(str(path))
        hyps = model.transcribe(paths, batch_size=1, return_hypotheses=True, verbose=False)
    out = []
    for clip, hyp in zip(clips, hyps, strict=True):
        y = torch.as_tensor(hyp.y_sequence).cpu()
        if y.ndim == 2:  # NeMo 3.0 keeps the frame log-probs of a greedy CTC hypothesis here
            logprobs = y.numpy().astype(np.float32)
        else:  # older NeMo: the frame argmax only; take the log-probs from forward()
            with torch.no_grad():
                signal = torch.from_numpy(clip.audio).unsqueeze(0)
                length = torch.tensor([clip.audio.shape[0]], dtype=torch.int64)
                lp, lengths = model.forward(input_signal=signal, input_signal_length=length)[:2]
            logprobs = lp[0, : int(lengths[0])].numpy()
        n = logprobs.shape[0]
        tokens = collapse(frame_argmax(logprobs, n), blank_id)
        out.append((logprobs, n, tokens, hyp.text))
    return out


def measure_parity(
    model: Any,
    run_graph: RunGraph,
    clips: Sequence[Clip],
    detokenizer: Detokenizer,
    blank_id: int,
    sample_rate: int,
    tolerance: float = FP32_TOLERANCE,
    reference: list[tuple[npt.NDArray[np.float32], int, list[int], str]] | None = None,
) -> tuple[ParityReport, list[str]]:
    """Compare the graph with NeMo on every clip: the figures, and every inadmissible difference found."""
    reference = reference if reference is not None else nemo_reference(model, clips)
    problems: list[str] = []
    max_diff, ties, same_tokens, same_text = 0.0, [0] * len(clips), 0, 0
    alone: list[npt.NDArray[np.float32]] = []
    for index, (clip, (ref_lp, ref_len, ref_tokens, ref_text)) in enumerate(zip(clips, reference, strict=True)):
        batch, lengths = pad_batch([clip.audio])
        logprobs, out_len = run_graph(batch, lengths)
        n = int(out_len[0])
        alone.append(logprobs[0, :n])
        if n != ref_len:
            problems.append(f"{clip.label}: {n} output frames, NeMo has {ref_len}")
            continue
        if not np.isfinite(logprobs[0, :n]).all():  # NaN would pass any `max(...) <= tolerance`
            raise ParityError(f"{clip.label}: the graph's log-probabilities are not finite (NaN or infinite)")
        if n:
            max_diff = max(max_diff, float(np.abs(logprobs[0, :n] - ref_lp).max()))
        ours, theirs = frame_argmax(logprobs[0], n), frame_argmax(ref_lp, n)
        clip_ties = 0  # a tie excuses differences in its own clip only
        for frame in np.flatnonzero(ours != theirs):
            top2 = np.sort(ref_lp[frame])[-2:]
            if top2[1] - top2[0] < tolerance:
                clip_ties += 1
            else:
                problems.append(f"{clip.label}: frame {frame} argmax {ours[frame]} vs NeMo {theirs[frame]}")
        ties[index] = clip_ties
        tokens = greedy_decode(logprobs[0], n, blank_id).token_ids.tolist()
        text = detokenizer.text(tokens)
        same_tokens += tokens == ref_tokens
        same_text += text == ref_text
        if tokens != ref_tokens and not clip_ties:
            problems.append(f"{clip.label}: tokens differ from NeMo transcribe()")
        if text != ref_text and tokens == ref_tokens:
            problems.append(f"{clip.label}: text {text!r} but NeMo transcribe() says {ref_text!r}")
    if max_diff > tolerance:
        problems.append(f"max |Δ log-prob| {max_diff:.2e} exceeds {tolerance:.0e}")

    batch, lengths = pad_batch([c.audio for c in clips])
    logprobs, out_len = run_graph(batch, lengths)
    batch_diff, batch_same = 0.0, True
    for i, single in enumerate(alone):
        n = single.shape[0]
        if int(out_len[i]) != n:
            problems.append(f"{clips[i].label}: {int(out_len[i])} frames in the batch, {n} alone")
            batch_same = False
            continue
        if not np.isfinite(logprobs[i, :n]).all():
            raise ParityError(f"{clips[i].label}: in a padded batch the graph's log-probabilities are not finite")
        if n:
            batch_diff = max(batch_diff, float(np.abs(logprobs[i, :n] - single).max()))
        batch_same &= bool((frame_argmax(logprobs[i], n) == frame_argmax(single, n)).all())
    if not batch_same or batch_diff > tolerance:
        problems.append(f"padded batch differs from items alone (max |Δ| {batch_diff:.2e})")

    report = ParityReport(
        clips=len(clips),
        identical_tokens=same_tokens,
        identical_text=same_text,
        max_abs_logprob_diff=max_diff,
        tolerance=tolerance,
        tie_frames=sum(ties),
        ties_per_clip=ties,
        batch_max_abs_diff=batch_diff,
        batch_identical_tokens=batch_same,
        total_audio_s=round(sum(c.audio.shape[0] for c in clips) / sample_rate, 3),
        lengths_s=[round(c.audio.shape[0] / sample_rate, 3) for c in clips],
    )
    return report, problems


def check_parity(*args: Any, **kwargs: Any) -> ParityReport:
    """measure_parity, raising ParityError (with the first differences) unless the graph reproduces NeMo."""
    report, problems = measure_parity(*args, **kwargs)
    if problems:
        raise ParityError("the ONNX graph does not reproduce NeMo:\n  " + "\n  ".join(problems[:20]))
    return report
