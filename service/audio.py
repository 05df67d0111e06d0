"""Audio as people send it -> mono float32 at the model's rate. Decoded from the bytes by soundfile
(the file name and declared content type are never trusted), resampled with soxr, limits checked early."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from service.errors import AudioTooLong, AudioTooShort, BadRequest, EmptyAudio, UndecodableAudio, UnsupportedFormat

# Rates outside this range are not audio anyone records; refusing them keeps soxr's work bounded.
MIN_RATE, MAX_RATE = 1000, 384_000
MAX_CHANNELS = 64
BLOCK_FRAMES = 1 << 16  # decode in blocks so a lying header cannot make us decode past the limit


@dataclass(frozen=True)
class Limits:
    min_duration_s: float = 0.0
    max_duration_s: float = 3600.0
    formats: tuple[str, ...] = ()  # soundfile container names; empty: any
    require_sample_rate: int = 0
    require_mono: bool = False


@dataclass(frozen=True)
class Decoded:
    samples: npt.NDArray[np.float32]  # mono, at the target rate
    source_rate: int
    channels: int
    format: str  # soundfile's container name: WAV, FLAC, OGG, MP3, ...
    subtype: str  # PCM_16, FLOAT, VORBIS, OPUS, MPEG_LAYER_III, ...
    duration_s: float  # of the audio as sent


def decode(data: bytes, target_rate: int, limits: Limits) -> Decoded:
    """Decode, check, down-mix and resample. Raises the service's client errors (4xx)."""
    if not data:
        raise EmptyAudio("the audio file is empty")
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise UnsupportedFormat(
            "the upload is not audio in a format we decode (WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, ...)"
        ) from None
    with f:
        if limits.formats and f.format not in limits.formats:
            raise UnsupportedFormat(f"{f.format} audio is not accepted here; accepted: {', '.join(limits.formats)}")
        rate, channels = int(f.samplerate), int(f.channels)
        if not MIN_RATE <= rate <= MAX_RATE:
            raise BadRequest(f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
        if not 1 <= channels <= MAX_CHANNELS:
            raise BadRequest(f"{channels} channels: between 1 and {MAX_CHANNELS} are accepted")
        if limits.require_sample_rate and rate != limits.require_sample_rate:
            raise BadRequest(f"audio must be sampled at {limits.require_sample_rate} Hz (got {rate} Hz)")
        if limits.require_mono and channels != 1:
            raise BadRequest(f"audio must be mono (got {channels} channels)")
        max_frames = int(limits.max_duration_s * rate)
        if f.frames > max_frames and f.seekable() and f.frames < 2**62:
            raise AudioTooLong(f"audio lasts {f.frames / rate:.1f} s; the limit is {limits.max_duration_s:g} s")
        mono = _read_mono(f, max_frames, limits.max_duration_s)
        fmt, subtype = str(f.format), str(f.subtype)
    if mono.shape[0] == 0:
        raise EmptyAudio("the audio holds no samples")
    if not np.isfinite(mono).all():
        raise UndecodableAudio("the audio holds NaN or infinite samples")
    duration = mono.shape[0] / rate
    if duration < limits.min_duration_s:
        raise AudioTooShort(f"audio lasts {duration:.2f} s; the minimum is {limits.min_duration_s:g} s")
    if rate != target_rate:
        mono = np.asarray(soxr.resample(mono, rate, target_rate, quality="HQ"), dtype=np.float32)
    return Decoded(mono, rate, channels, fmt, subtype, duration)


def _read_mono(f: sf.SoundFile, max_frames: int, max_duration_s: float) -> npt.NDArray[np.float32]:
    """Read block by block, averaging channels, refusing as soon as the real length passes the limit."""
    blocks: list[npt.NDArray[np.float32]] = []
    total = 0
    try:
        while True:
            block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            total += block.shape[0]
            if total > max_frames:
                raise AudioTooLong(f"audio lasts longer than the limit of {max_duration_s:g} s")
            blocks.append(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].copy())
    except sf.LibsndfileError:
        raise UndecodableAudio("the audio data is corrupt or truncated") from None
    if not blocks:
        return np.zeros(0, np.float32)
    return np.concatenate(blocks)
