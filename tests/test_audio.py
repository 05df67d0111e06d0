"""Decoding real-world audio: formats, rates, channels, and every way it can be refused."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.audio.decode import Limits, decode, sniff_container
from service.errors import (
    AudioTooLarge,
    AudioTooLong,
    AudioTooShort,
    BadRequest,
    EmptyAudio,
    UndecodableAudio,
    UnsupportedFormat,
)
from tests.audio_files import ENCODINGS, encode, ffmpeg_encode

RATE = 16000


def tone(seconds: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


@pytest.mark.parametrize(("label", "container", "subtype"), ENCODINGS)
def test_every_encoding_decodes(label: str, container: str, subtype: str) -> None:
    rate = 48000 if subtype == "OPUS" else 22050
    d = decode(encode(tone(1.0, rate), rate, container, subtype), RATE, Limits())
    assert d.format == container and d.subtype == subtype and d.source_rate == rate
    assert d.samples.dtype == np.float32
    assert abs(d.samples.shape[0] - RATE) < RATE * 0.1  # codecs may add priming/padding samples
    assert 0.1 < float(np.abs(d.samples).max()) < 0.5


def test_16k_mono_pcm_is_passed_through_exactly() -> None:
    pcm = (np.random.default_rng(0).integers(-20000, 20000, 8000)).astype(np.int16)
    d = decode(encode(pcm.astype(np.float32) / 32768, RATE), RATE, Limits())
    assert np.array_equal(d.samples, pcm.astype(np.float32) / 32768)


@pytest.mark.parametrize("rate", [8000, 11025, 44100, 48000, 96000])
def test_any_rate_is_resampled(rate: int) -> None:
    d = decode(encode(tone(2.0, rate), rate), RATE, Limits())
    assert d.samples.shape[0] == pytest.approx(2 * RATE, abs=2)
    spectrum = np.abs(np.fft.rfft(d.samples))
    assert np.argmax(spectrum) * RATE / d.samples.shape[0] == pytest.approx(440, abs=2)


@pytest.mark.parametrize("channels", [2, 6])
def test_channels_are_averaged(channels: int) -> None:
    d = decode(encode(tone(1.0, RATE, channels), RATE), RATE, Limits())
    expected = tone(1.0) * np.mean([(c + 1) / channels for c in range(channels)])
    assert np.allclose(d.samples, expected, atol=1e-3) and d.channels == channels


def test_refusals() -> None:
    with pytest.raises(EmptyAudio):
        decode(b"", RATE, Limits())
    with pytest.raises(EmptyAudio):
        decode(encode(np.zeros(0, np.float32), RATE), RATE, Limits())
    with pytest.raises(UnsupportedFormat):
        decode("नमस्ते, this is text".encode(), RATE, Limits())
    with pytest.raises(UnsupportedFormat):
        decode(encode(tone(0.5), RATE, "FLAC"), RATE, Limits(formats=("WAV",)))
    with pytest.raises(AudioTooLong):
        decode(encode(tone(3.0), RATE), RATE, Limits(max_duration_s=2.0))
    with pytest.raises(AudioTooShort):
        decode(encode(tone(0.1), RATE), RATE, Limits(min_duration_s=0.5))
    with pytest.raises(BadRequest, match="16000 Hz"):
        decode(encode(tone(0.5, 8000), 8000), RATE, Limits(require_sample_rate=16000))
    with pytest.raises(BadRequest, match="mono"):
        decode(encode(tone(0.5, RATE, 2), RATE), RATE, Limits(require_mono=True))
    nan = tone(0.5)
    nan[100] = np.nan
    with pytest.raises(UndecodableAudio):
        decode(encode(nan, RATE, "WAV", "FLOAT"), RATE, Limits())


def test_seed_rule_is_settings_only() -> None:
    """The seed's rule, 16 kHz mono WAV of 5-10 s, expressed purely through limits."""
    seed = Limits(min_duration_s=5, max_duration_s=10, formats=("WAV",), require_sample_rate=16000, require_mono=True)
    assert decode(encode(tone(7.0), RATE), RATE, seed).duration_s == pytest.approx(7.0)
    for bad in (
        encode(tone(4.0), RATE),
        encode(tone(11.0), RATE),
        encode(tone(7.0), RATE, "FLAC"),
        encode(tone(7.0, 8000), 8000),
        encode(tone(7.0, RATE, 2), RATE),
    ):
        with pytest.raises((AudioTooShort, AudioTooLong, UnsupportedFormat, BadRequest)):
            decode(bad, RATE, seed)


def test_the_unknown_length_marker_reads_what_is_there() -> None:
    """Writers that stream (pipes, espeak-ng --stdout) leave the size fields at ~2 GB: the bytes present are
    decoded, exactly, and nothing more."""
    audio = tone(1.0)
    data = bytearray(encode(audio, RATE))
    data[40:44] = (0x7FFFFF00).to_bytes(4, "little")  # data chunk size: ~2 GB
    data[4:8] = (0x7FFFFF00 + 36).to_bytes(4, "little")
    d = decode(bytes(data), RATE, Limits(max_duration_s=600))
    assert d.samples.shape[0] == RATE and np.allclose(d.samples, audio, atol=1 / 32768)


def test_a_wav_cut_short_is_refused() -> None:
    """The first 2,000 bytes of a 5.45-s WAV: its header announces 174,400 bytes of audio; 400, not 0.06 s."""
    data = encode(tone(5.45), RATE)
    assert decode(data, RATE, Limits()).duration_s == pytest.approx(5.45)
    with pytest.raises(UndecodableAudio, match="cut short"):
        decode(data[:2000], RATE, Limits())


def test_blocks_keep_memory_flat(tmp_path: object) -> None:
    """Ten minutes of 384 kHz stereo (1.8 GB of float32 samples) decode with Python's peak allocation within a
    few blocks: the 38-MB output at 16 kHz (over spill.SPILL_BYTES, as the header says) goes to disk as it is
    made; a minute stays in memory. Both give exactly what a one-shot resample of the whole gives (checked on
    shorter clips)."""
    import tracemalloc

    from service.audio.spill import SPILL_BYTES, DiskSamples
    from tests.audio_files import silent_flac

    data = silent_flac(384_000, 2, 600.0)
    tracemalloc.start()
    d = decode(data, RATE, Limits(max_decoded_mb=5000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(d.samples, DiskSamples) and d.samples.shape[0] == 600 * RATE > SPILL_BYTES // 4
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.0f} MB for a {600 * RATE * 4 / 2**20:.0f} MB output"
    assert not np.asarray(d.samples[-RATE:]).any()  # silence, read back from the end of the file
    assert isinstance(decode(silent_flac(384_000, 2, 60.0), RATE, Limits()).samples, np.ndarray)
    import soxr

    stereo = tone(3.3, 44100, 2)
    whole = soxr.resample(stereo.mean(axis=1, dtype=np.float32), 44100, RATE, quality="HQ")
    assert np.array_equal(decode(encode(stereo, 44100, "WAV", "FLOAT"), RATE, Limits()).samples, whole)


def test_long_audio_on_disk_is_the_audio_exactly() -> None:
    """Nine minutes of 16-bit noise at 16 kHz (over SPILL_BYTES as float32): read back from disk, sample for
    sample what the WAV holds; and at 44.1 kHz, what the resampler makes of it in memory, read back from disk."""
    import soxr

    from service.audio.spill import DiskSamples

    pcm = np.random.default_rng(5).integers(-30000, 30000, 540 * RATE).astype(np.int16)
    d = decode(encode(pcm.astype(np.float32) / 32768, RATE), RATE, Limits())
    assert isinstance(d.samples, DiskSamples)
    assert np.array_equal(np.asarray(d.samples), pcm.astype(np.float32) / 32768)
    slow = tone(560.0, 44100)
    d = decode(encode(slow, 44100, "WAV", "FLOAT"), RATE, Limits())
    assert isinstance(d.samples, DiskSamples)
    assert np.array_equal(np.asarray(d.samples), soxr.resample(slow, 44100, RATE, quality="HQ"))


def test_decoded_size_is_refused_from_the_header() -> None:
    from service.errors import AudioTooLarge
    from tests.audio_files import silent_flac

    with pytest.raises(AudioTooLarge, match="384000 Hz x 2 channel"):
        decode(silent_flac(384_000, 2, 3600.0), RATE, Limits())  # 11 GB of samples, a 6-MB upload


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048), st.integers(0, 400))
def test_mutated_files_only_raise_client_errors(noise: bytes, cut: int) -> None:
    valid = encode(tone(0.3), RATE)
    for data in (valid[:cut] + noise, valid[:44] + noise, noise):
        with contextlib.suppress(BadRequest, UnsupportedFormat, AudioTooLong, AudioTooShort):
            decode(data, RATE, Limits(max_duration_s=60))


def test_decoding_stops_at_the_next_block_when_nobody_waits() -> None:
    """The entry sets the stop flag when its request is cancelled (client gone, timeout): decoding ends at the
    next block instead of running to the end of a long file."""
    from service.audio.decode import BLOCK_FRAMES, Abandoned
    from tests.audio_files import silent_flac

    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 3  # three blocks, then the caller is gone

    with pytest.raises(Abandoned):
        decode(silent_flac(48_000, 2, 4096 * 2000 / 48_000), RATE, Limits(), stop)
    assert len(asked) == 4 and BLOCK_FRAMES * 100 < 2000 * 4096  # a file of 125 blocks, 3 decoded


def test_browser_recordings_without_a_length_decode() -> None:
    """WebM as a browser's MediaRecorder writes it (a live stream: no duration in the header) decodes whole;
    with no length promised, a part of such a file is the audio it holds."""
    streamed = ffmpeg_encode(tone(3.0, 48000, 2), 48000, "WEBM", streamed=True)
    whole = decode(streamed, RATE, Limits())
    assert whole.format == "WEBM" and whole.channels == 2 and whole.duration_s == pytest.approx(3.0, abs=0.05)
    part = decode(streamed[: len(streamed) // 2], RATE, Limits())
    assert 1.0 < part.duration_s < 2.0


def test_phone_codecs_at_their_rates() -> None:
    """AMR-NB (8 kHz mono, old phones' voice memos) and AAC-LC in M4A at 16 kHz mono."""
    amr = decode(ffmpeg_encode(tone(2.0, 8000), 8000, "AMR"), RATE, Limits())
    assert (amr.format, amr.subtype, amr.source_rate) == ("AMR", "AMRNB", 8000)
    assert amr.duration_s == pytest.approx(2.0, abs=0.05)
    m4a = decode(ffmpeg_encode(tone(2.0, RATE), RATE, "MP4"), RATE, Limits())
    spectrum = np.abs(np.fft.rfft(m4a.samples))
    assert np.argmax(spectrum) * RATE / m4a.samples.shape[0] == pytest.approx(440, abs=2)


@pytest.mark.parametrize("container", ["AAC", "MP4", "WEBM"])
def test_containers_of_many_channels_decode(container: str) -> None:
    """7.1 audio in FFmpeg's containers is averaged like any other. (Before, decoding a file of 8 channels killed
    the process: PyAV 18 reads a planar frame's planes past its last channel; a fuzzed ADTS header announcing 9
    channels did the same to the server.)"""
    rate = 48000 if container == "WEBM" else RATE
    d = decode(ffmpeg_encode(tone(1.0, rate, 8), rate, container), RATE, Limits())
    assert d.channels == 8 and abs(d.samples.shape[0] - RATE) < RATE * 0.1
    expected = 0.3 * np.mean([(c + 1) / 8 for c in range(8)])  # the tone's amplitude once the channels are averaged
    assert float(np.abs(d.samples).max()) == pytest.approx(expected, rel=0.15)
    spectrum = np.abs(np.fft.rfft(d.samples))
    assert np.argmax(spectrum) * RATE / d.samples.shape[0] == pytest.approx(440, abs=2)


@pytest.mark.parametrize("container", ["MP4", "WEBM"])
def test_containers_cut_short_are_refused(container: str) -> None:
    """The rule for every container: a header that promises more audio than the file holds is a 400
    undecodable_audio (a partial upload), never a shorter transcript."""
    rate = 48000 if container == "WEBM" else 44100
    data = ffmpeg_encode(tone(4.0, rate, 2), rate, container)
    for keep in (0.5, 0.9):
        with pytest.raises(UndecodableAudio):
            decode(data[: int(len(data) * keep)], RATE, Limits())


def test_container_limits_apply_from_the_header() -> None:
    """Rate x channels x duration and the duration limit are read from an MP4's header, before decoding."""
    data = ffmpeg_encode(tone(6.0, 48000, 2), 48000, "MP4")
    with pytest.raises(AudioTooLong, match=r"lasts 6\.0 s"):
        decode(data, RATE, Limits(max_duration_s=5))
    with pytest.raises(AudioTooLarge):
        decode(data, RATE, Limits(max_decoded_mb=1))
    with pytest.raises(UnsupportedFormat, match="MP4 audio is not accepted"):
        decode(data, RATE, Limits(formats=("WAV", "FLAC")))


def test_only_known_containers_reach_ffmpeg() -> None:
    """FFmpeg is never asked to guess: a playlist, a concat list or a video-only file is not audio we take."""
    for text in (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", b"ffconcat version 1.0\nfile /etc/passwd\n"):
        with pytest.raises(UnsupportedFormat):
            decode(text, RATE, Limits())
    assert sniff_container(b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00") == "mov"
    assert sniff_container(b"\x1aE\xdf\xa3\x9fB\x86") == "matroska"
    assert sniff_container(b"\xff\xf1\x50\x80") == "aac" and sniff_container(b"\xff\xfb\x90\x00") == "mp3"
    with pytest.raises(UnsupportedFormat, match="no audio stream"):
        decode(video_only_mp4(), RATE, Limits())


def video_only_mp4() -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as file:
        stream = file.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                file.mux(packet)
        for packet in stream.encode(None):
            file.mux(packet)
    return out.getvalue()


def _from_file_and_bytes(data: bytes) -> tuple[object, object]:
    """decode() of the bytes and of a temporary file holding them (left at its end, as a spooled upload is): the
    samples and header facts, or the error's type and message."""
    import tempfile

    def outcome(source: object) -> object:
        try:
            d = decode(source, RATE, Limits(max_duration_s=60))  # type: ignore[arg-type]
        except Exception as exc:
            return type(exc).__name__, str(exc)
        return d.samples.tobytes(), d.source_rate, d.channels, d.format, d.subtype, d.duration_s

    with tempfile.TemporaryFile() as f:
        f.write(data)
        return outcome(data), outcome(f)


def _cut_short_wav() -> bytes:
    return encode(tone(5.45), RATE)[:2000]


def _unknown_length_wav() -> bytes:
    data = bytearray(encode(tone(1.0), RATE))
    data[40:44] = (0x7FFFFF00).to_bytes(4, "little")
    data[4:8] = (0x7FFFFF00 + 36).to_bytes(4, "little")
    return bytes(data)


FILE_CASES = {
    **{
        label: (lambda c=container, s=subtype: encode(tone(1.0, 48000), 48000, c, s))
        for label, container, subtype in ENCODINGS
    },
    "mp4 5.1": lambda: ffmpeg_encode(tone(1.0, 44100, 6), 44100, "MP4"),
    "webm streamed": lambda: ffmpeg_encode(tone(1.0, 48000), 48000, "WEBM", streamed=True),
    "amr": lambda: ffmpeg_encode(tone(1.0, 8000), 8000, "AMR"),
    "wav cut short": _cut_short_wav,
    "mp4 cut short": lambda: ffmpeg_encode(tone(4.0, 44100, 2), 44100, "MP4")[:20000],
    "wav of unknown length": _unknown_length_wav,
    "empty": lambda: b"",
    "text": lambda: b"plain words, not audio",
    "too long": lambda: encode(tone(61.0, 8000), 8000),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_a_file_decodes_as_its_bytes(case: str) -> None:
    """A large upload reaches the decoder as a file (service/api/forms.py): every format, and every refusal, the
    same as from the bytes, to the sample."""
    from_bytes, from_file = _from_file_and_bytes(FILE_CASES[case]())
    assert from_file == from_bytes
