"""Acoustic conditions the one synthetic voice does not have: noise of several kinds at a chosen SNR, the
telephone band, gain, and light reverberation. Pure numpy/scipy, driven by a caller's seeded generator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import signal

RATE = 16000
Audio = npt.NDArray[np.float32]
NOISE_KINDS = ("white", "pink", "brown", "babble", "tones", "hum")


def _rms(x: Audio) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def coloured(n: int, exponent: float, rng: np.random.Generator) -> Audio:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.shape[0], dtype=np.float64)
    f[0] = 1.0
    out = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return (out / (np.std(out) + 1e-12)).astype(np.float32)


def tones(n: int, rng: np.random.Generator, rate: int = RATE) -> Audio:
    """Music-like: a sequence of notes (fundamental + harmonics, decaying), 2-3 voices at once."""
    out = np.zeros(n, np.float32)
    for _ in range(rng.integers(2, 4)):
        t = 0
        while t < n:
            length = int(rng.uniform(0.15, 0.8) * rate)
            k = np.arange(min(length, n - t))
            f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
            note = sum(np.sin(2 * np.pi * f0 * h * k / rate) / h for h in range(1, 6))
            out[t : t + k.size] += (note * np.exp(-k / (0.3 * rate))).astype(np.float32)
            t += length
    return out / (np.std(out) + 1e-12)


def hum(n: int, rng: np.random.Generator, rate: int = RATE) -> Audio:
    """Mains hum (50 or 60 Hz and harmonics) over a little white noise."""
    k = np.arange(n)
    f0 = rng.choice([50.0, 60.0])
    out = sum(np.sin(2 * np.pi * f0 * h * k / rate + rng.uniform(0, 6)) / h for h in range(1, 8))
    out = out + 0.1 * rng.standard_normal(n)
    return np.asarray(out / (np.std(out) + 1e-12), dtype=np.float32)


def babble(n: int, rng: np.random.Generator, voices: Sequence[Audio]) -> Audio:
    """3-6 other utterances at once, each looped to the length."""
    out = np.zeros(n, np.float32)
    for _ in range(int(rng.integers(3, 7))):
        v = voices[int(rng.integers(len(voices)))]
        if v.size == 0:
            continue
        reps = int(np.ceil((n + v.size) / v.size))
        start = int(rng.integers(v.size))
        out += np.tile(v, reps)[start : start + n] / (_rms(v) + 1e-9)
    return out / (np.std(out) + 1e-12)


def noise(kind: str, n: int, rng: np.random.Generator, voices: Sequence[Audio] = ()) -> Audio:
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "pink":
        return coloured(n, 1.0, rng)
    if kind == "brown":
        return coloured(n, 2.0, rng)
    if kind == "babble" and voices:
        return babble(n, rng, voices)
    if kind == "tones":
        return tones(n, rng)
    if kind == "hum":
        return hum(n, rng)
    return rng.standard_normal(n).astype(np.float32)


def add_noise(speech: Audio, noise_: Audio, snr_db: float) -> Audio:
    """speech + noise scaled to `snr_db` below the speech's power (measured over the speech's loud part)."""
    loud = speech[np.abs(speech) > 0.01 * (np.abs(speech).max() + 1e-9)]
    power = _rms(loud if loud.size else speech)
    scale = power / (_rms(noise_) + 1e-12) / 10 ** (snr_db / 20)
    return (speech + scale * noise_[: speech.size]).astype(np.float32)


def telephone(audio: Audio, rng: np.random.Generator, rate: int = RATE) -> Audio:
    """300-3400 Hz band, 8 kHz sampling and 8-bit mu-law companding, as a phone line carries speech."""
    import soxr

    sos = signal.butter(6, [300, 3400], btype="bandpass", fs=rate, output="sos")
    x = signal.sosfilt(sos, audio).astype(np.float32)
    narrow = np.asarray(soxr.resample(x, rate, 8000), dtype=np.float32)
    peak = np.abs(narrow).max() + 1e-9
    mu = 255.0
    y = np.sign(narrow / peak) * np.log1p(mu * np.abs(narrow / peak)) / np.log1p(mu)
    y = np.round(y * 127) / 127  # 8 bits
    narrow = (np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu * peak).astype(np.float32)
    out = np.asarray(soxr.resample(narrow, 8000, rate), dtype=np.float32)
    return out[: audio.size] if out.size >= audio.size else np.pad(out, (0, audio.size - out.size))


def reverb(audio: Audio, rng: np.random.Generator, rate: int = RATE) -> Audio:
    """A small room: exponentially decaying noise as impulse response (RT60 0.1-0.45 s), direct path kept."""
    rt60 = rng.uniform(0.1, 0.45)
    n = int(rt60 * rate)
    k = np.arange(n)
    ir = rng.standard_normal(n) * np.exp(-6.9 * k / n)  # -60 dB at rt60
    ir[0] = 0.0
    ir *= rng.uniform(0.1, 0.4) / (np.sqrt(np.sum(ir**2)) + 1e-9)
    ir[0] = 1.0
    return np.asarray(signal.fftconvolve(audio, ir)[: audio.size], dtype=np.float32)


def gain(audio: Audio, db: float) -> Audio:
    return np.asarray(np.clip(audio * 10 ** (db / 20), -1.0, 1.0), dtype=np.float32)


def augment(audio: Audio, rng: np.random.Generator, voices: Sequence[Audio] = ()) -> Audio:
    """The training mix: reverb (20 %), telephone band (15 %), noise at 0-30 dB SNR (65 %, any kind), then a
    gain of -25..+5 dB; a fifth of the utterances stay clean apart from the gain."""
    x = audio
    if rng.random() < 0.8:
        if rng.random() < 0.2:
            x = reverb(x, rng)
        if rng.random() < 0.15:
            x = telephone(x, rng)
        if rng.random() < 0.8:
            kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
            x = add_noise(x, noise(kind, x.size, rng, voices), rng.uniform(0.0, 30.0))
    peak = np.abs(x).max() + 1e-9
    return gain(x / peak * 0.5, rng.uniform(-25.0, 5.0))


def non_speech(seconds: float, rng: np.random.Generator, voices: Sequence[Audio] = ()) -> Audio:
    """A clip with nothing to transcribe: digital silence, or one kind of noise (not babble) at -60..-15 dBFS."""
    n = int(seconds * RATE)
    if rng.random() < 0.15:
        return np.zeros(n, np.float32)
    kind = ("white", "pink", "brown", "tones", "hum")[int(rng.integers(5))]
    level = 10 ** (rng.uniform(-60.0, -15.0) / 20)
    return np.asarray(np.clip(noise(kind, n, rng, voices) * level, -1, 1), dtype=np.float32)
