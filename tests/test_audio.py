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


def test_header_that_lies_about_length_is_refused_while_decoding() -> None:
    """A WAV whose header claims hours: refused from the header, never decoded whole."""
    data = bytearray(encode(tone(1.0), RATE))
    data[40:44] = (0x7FFFFF00).to_bytes(4, "little")  # data chunk size: ~2 GB
    data[4:8] = (0x7FFFFF00 + 36).to_bytes(4, "little")
    try:
        d = decode(bytes(data), RATE, Limits(max_duration_s=600))
    except (AudioTooLong, UndecodableAudio):
        return
    assert d.samples.shape[0] <= RATE  # libsndfile clamped the size to the bytes actually present


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048), st.integers(0, 400))
def test_mutated_files_only_raise_client_errors(noise: bytes, cut: int) -> None:
    valid = encode(tone(0.3), RATE)
    for data in (valid[:cut] + noise, valid[:44] + noise, noise):
        with contextlib.suppress(BadRequest, UnsupportedFormat, AudioTooLong, AudioTooShort):
            decode(data, RATE, Limits(max_duration_s=60))
