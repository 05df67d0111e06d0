"""Decoding real-world audio: formats, rates, channels, and every way it can be refused."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.audio import Limits, decode
from service.errors import AudioTooLong, AudioTooShort, BadRequest, EmptyAudio, UndecodableAudio, UnsupportedFormat
from tests.audio_files import ENCODINGS, encode

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


def test_blocks_keep_memory_to_the_output(tmp_path: object) -> None:
    """Ten minutes of 384 kHz stereo (1.8 GB of float32 samples) decode with numpy's peak allocation within
    the 16-kHz output (38 MB) plus a few blocks, and give exactly what a one-shot resample of the whole gives
    (checked on a shorter clip)."""
    import tracemalloc

    from tests.audio_files import silent_flac

    data = silent_flac(384_000, 2, 600.0)
    tracemalloc.start()
    d = decode(data, RATE, Limits(max_decoded_mb=5000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    output = d.samples.nbytes
    assert d.samples.shape[0] == 600 * RATE and output == 600 * RATE * 4
    assert peak < output + 40 * 2**20, f"peak {peak / 2**20:.0f} MB for a {output / 2**20:.0f} MB output"
    import soxr

    stereo = tone(3.3, 44100, 2)
    whole = soxr.resample(stereo.mean(axis=1, dtype=np.float32), 44100, RATE, quality="HQ")
    assert np.array_equal(decode(encode(stereo, 44100, "WAV", "FLOAT"), RATE, Limits()).samples, whole)


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
    from service.audio import BLOCK_FRAMES, Abandoned
    from tests.audio_files import silent_flac

    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 3  # three blocks, then the caller is gone

    with pytest.raises(Abandoned):
        decode(silent_flac(48_000, 2, 4096 * 2000 / 48_000), RATE, Limits(), stop)
    assert len(asked) == 4 and BLOCK_FRAMES * 100 < 2000 * 4096  # a file of 125 blocks, 3 decoded
