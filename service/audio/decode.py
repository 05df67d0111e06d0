"""Audio as people send it -> mono float32 at the model's rate. Decoded from the bytes by libsndfile, or by
FFmpeg through PyAV for the containers libsndfile lacks (service/audio/containers.py); the file name and declared
content type are never trusted. Resampled with soxr, limits checked early."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from service.audio.source import BLOCK_FRAMES, Source
from service.audio.spill import Samples, SampleSink
from service.errors import (
    AudioTooLarge,
    AudioTooLong,
    AudioTooShort,
    BadRequest,
    EmptyAudio,
    UndecodableAudio,
    UnsupportedFormat,
)

# Rates outside this range are not audio anyone records; refusing them keeps soxr's work bounded.
MIN_RATE, MAX_RATE = 1000, 384_000
MAX_CHANNELS = 64


@dataclass(frozen=True)
class Limits:
    min_duration_s: float = 0.0
    max_duration_s: float = 3600.0
    formats: tuple[str, ...] = ()  # soundfile container names; empty: any
    require_sample_rate: int = 0
    require_mono: bool = False
    # rate x channels x seconds x 4 bytes of float32 samples at the upload's own rate, in MB (MiB)
    max_decoded_mb: float = 1400.0


@dataclass(frozen=True)
class Decoded:
    samples: Samples  # mono, at the target rate (on disk when long: service/audio/spill.py)
    source_rate: int
    channels: int
    format: str  # soundfile's container name: WAV, FLAC, OGG, MP3, ...
    subtype: str  # PCM_16, FLOAT, VORBIS, OPUS, MPEG_LAYER_III, ...
    duration_s: float  # of the audio as sent


class Abandoned(Exception):
    """Nobody waits for this decoding any more (the client went away or the request timed out)."""


Upload = bytes | BinaryIO  # an upload in memory, or a seekable file holding it (a large one waits on disk)


def decode(data: Upload, target_rate: int, limits: Limits, stop: Callable[[], bool] | None = None) -> Decoded:
    """Decode, check, down-mix and resample, block by block: a request's peak memory is one block plus its
    audio at the model's rate up to spill.SPILL_BYTES (beyond, the audio waits on disk), whatever the upload's
    rate and channel count (and, from a file, whatever its size). libsndfile reads what it knows (WAV, FLAC,
    OGG, MP3, AIFF, ...); FFmpeg's demuxers and decoders (PyAV) read what phones and browsers record (MP4/M4A
    with AAC, WebM/Matroska with Opus, ADTS AAC, AMR).
    Raises the service's client errors (4xx), or Abandoned when `stop()` turns true between blocks."""
    upload: BinaryIO = io.BytesIO(data) if isinstance(data, bytes) else data
    size = upload.seek(0, io.SEEK_END)
    if not size:
        raise EmptyAudio("the audio file is empty")
    upload.seek(0)
    head = upload.read(HEAD_BYTES)
    upload.seek(0)
    try:
        f = sf.SoundFile(upload)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        container = sniff_container(head)
        if container is None:
            raise UnsupportedFormat(f"the upload is not audio in a format we decode ({FORMATS_NAMED})") from None
        from service.audio.containers import AVSource  # PyAV loads FFmpeg's libraries: only when needed

        upload.seek(0)
        with AVSource(upload, container) as source:
            return _decode(source, target_rate, limits, stop)
    with f:
        if f.format == "WAV":
            _check_wav_length(upload, size)
        return _decode(_SoundFileSource(f), target_rate, limits, stop)


HEAD_BYTES = 16  # what sniff_container reads of a file's start
FORMATS_NAMED = "WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, M4A/MP4 AAC, WebM/Matroska Opus, AAC, AMR, ..."

# Containers libsndfile does not read, told by their first bytes (never by name or declared type), each opened
# with its one FFmpeg demuxer: no probing, so no demuxer that follows playlists or references other files.
MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def sniff_container(data: bytes) -> str | None:
    """The FFmpeg demuxer for the bytes, among those we accept: mov (MP4, M4A, 3GP, QuickTime), matroska
    (WebM, MKA), aac (ADTS), amr, mp3 (what libsndfile's MPEG reader refuses); None for anything else."""
    if len(data) >= 12 and data[4:8] in MP4_BOXES:
        return "mov"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "matroska"
    if data[:6] == b"#!AMR\n" or data[:9] == b"#!AMR-WB\n":
        return "amr"
    if data[:3] == b"ID3":
        return "mp3"
    if len(data) < 4 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return None  # no frame sync
    version, layer, bitrate, rate = (data[1] >> 3) & 3, (data[1] >> 1) & 3, data[2] >> 4, (data[2] >> 2) & 3
    if data[1] & 0xF6 == 0xF0:  # ADTS: 12 sync bits, layer 00
        return "aac" if (data[2] >> 2) & 0xF < 13 else None
    if version != 1 and layer != 0 and bitrate != 15 and rate != 3:  # a valid MPEG audio frame header
        return "mp3"
    return None


class _SoundFileSource:
    def __init__(self, f: sf.SoundFile) -> None:
        self.f = f
        self.rate, self.channels = int(f.samplerate), int(f.channels)
        self.format, self.subtype = str(f.format), str(f.subtype)
        self.declared_frames = f.frames if f.seekable() and 0 <= f.frames < 2**62 else None

    def blocks(self) -> Iterator[npt.NDArray[np.float32]]:
        try:
            while True:
                block = self.f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    return
                yield block
        except sf.LibsndfileError:
            raise UndecodableAudio("the audio data is corrupt or truncated") from None

    def finished(self, frames: int) -> None:
        pass  # libsndfile reports damage while reading; WAV lengths are checked before (_check_wav_length)


def _decode(source: Source, target_rate: int, limits: Limits, stop: Callable[[], bool] | None) -> Decoded:
    if limits.formats and source.format not in limits.formats:
        raise UnsupportedFormat(f"{source.format} audio is not accepted here; accepted: {', '.join(limits.formats)}")
    rate, channels = source.rate, source.channels
    if not MIN_RATE <= rate <= MAX_RATE:
        raise BadRequest(f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise BadRequest(f"{channels} channels: between 1 and {MAX_CHANNELS} are accepted")
    if limits.require_sample_rate and rate != limits.require_sample_rate:
        raise BadRequest(f"audio must be sampled at {limits.require_sample_rate} Hz (got {rate} Hz)")
    if limits.require_mono and channels != 1:
        raise BadRequest(f"audio must be mono (got {channels} channels)")
    reader = _BlockReader(rate, channels, target_rate, limits, stop)
    if source.declared_frames is not None:  # refuse from the header: nothing decoded yet
        reader.check(source.declared_frames, from_header=True)
    mono = reader.read_all(source.blocks(), source.declared_frames)
    frames = reader.frames
    source.finished(frames)
    if frames == 0:
        raise EmptyAudio("the audio holds no samples")
    duration = frames / rate
    if duration < limits.min_duration_s:
        raise AudioTooShort(f"audio lasts {duration:.2f} s; the minimum is {limits.min_duration_s:g} s")
    return Decoded(mono, rate, channels, source.format, source.subtype, duration)


# What writers that stream (pipes, espeak-ng --stdout, sox -t wav -) put in a WAV's size fields when the
# length is not known when the header is written: such a file is read to its end, as libsndfile does.
UNKNOWN_SIZES = (0, 0xFFFFFFFF)
UNKNOWN_SIZE_FLOOR = 0x7FFFF000


def _check_wav_length(upload: BinaryIO, length: int) -> None:
    """A RIFF WAVE file whose `data` chunk announces more bytes than the file holds was cut short (a partial
    download or upload): refused, where libsndfile would quietly decode the part that is there. Reads the chunk
    headers only; leaves the file's position where it was."""
    was = upload.tell()
    try:
        upload.seek(0)
        if length < 12 or upload.read(4) != b"RIFF" or upload.read(8)[4:] != b"WAVE":
            return
        position = 12
        while position + 8 <= length:
            upload.seek(position)
            header = upload.read(8)
            chunk, size = header[:4], int.from_bytes(header[4:8], "little")
            if chunk == b"data":
                if size in UNKNOWN_SIZES or size >= UNKNOWN_SIZE_FLOOR:
                    return
                held = length - position - 8
                if size > held:
                    raise UndecodableAudio(
                        f"the WAV file is cut short: its header announces {size:,} bytes of audio, it holds {held:,}"
                    )
                return
            position += 8 + size + (size & 1)
    finally:
        upload.seek(was)


class _BlockReader:
    """Reads, down-mixes and resamples one block at a time into the output at the model's rate."""

    def __init__(
        self,
        rate: int,
        channels: int,
        target_rate: int,
        limits: Limits,
        stop: Callable[[], bool] | None,
    ) -> None:
        self.rate, self.channels, self.target_rate = rate, channels, target_rate
        self.limits, self.stop = limits, stop
        self.frames = 0
        self.max_frames = int(limits.max_duration_s * rate)
        self.max_decoded_bytes = int(limits.max_decoded_mb * 1024 * 1024)
        # soxr's streaming resampler gives exactly what a one-shot soxr.resample of the whole file gives
        self.resampler = (
            None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
        )

    def check(self, frames: int, from_header: bool = False) -> None:
        size = frames * self.channels * 4
        if frames > self.max_frames:
            what = f"lasts {frames / self.rate:.1f} s" if from_header else "lasts longer than the limit"
            raise AudioTooLong(f"audio {what}; the limit is {self.limits.max_duration_s:g} s")
        if size > self.max_decoded_bytes:
            mb = size / (1024 * 1024)
            raise AudioTooLarge(
                f"audio of {self.rate} Hz x {self.channels} channel(s) x {frames / self.rate:.1f} s decodes to "
                f"{mb:,.0f} MB of samples; the limit is {self.limits.max_decoded_mb:g} MB (send fewer channels or a "
                "lower rate, e.g. 16 kHz mono)"
            )

    def read_all(self, blocks: Iterator[npt.NDArray[np.float32]], declared: int | None) -> Samples:
        sink = SampleSink(int((declared or BLOCK_FRAMES) * self.target_rate / self.rate) + 16)
        for block in blocks:
            if self.stop is not None and self.stop():
                raise Abandoned
            self.frames += block.shape[0]
            self.check(self.frames)
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if not np.isfinite(mono).all():
                raise UndecodableAudio("the audio holds NaN or infinite samples")
            sink.put(mono if self.resampler is None else self.resampler.resample_chunk(mono))
        if self.resampler is not None and self.frames:
            sink.put(self.resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        return sink.samples()
