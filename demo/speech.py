"""Hindi speech from espeak-ng's Hindi voice (`hi`), at 16 kHz: whole sentences with varied speed, pitch,
voice variant and pauses between words, and sentences built word by word so every word's true span is known."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

RATE = 16000
Audio = npt.NDArray[np.float32]

# espeak-ng's voice variants (espeak-ng-data/voices/!v): pitch, formants and voicing of the one Hindi voice.
VARIANTS = (
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "adam",
    "antonio",
    "aunty",
    "boris",
    "david",
    "ed",
    "grandma",
    "iven",
    "john",
    "linda",
    "max",
    "paul",
    "quincy",
    "rob",
    "steph",
    "travis",
    "victor",
)


@dataclass(frozen=True)
class Voice:
    variant: str = ""  # one of VARIANTS ("" = the plain voice)
    speed: int = 150  # words per minute (espeak-ng -s)
    pitch: int = 50  # 0..99 (-p)
    word_gap: int = 0  # extra pause between words, in units of 10 ms (-g)

    def args(self) -> list[str]:
        name = "hi" + (f"+{self.variant}" if self.variant else "")
        return ["-v", name, "-s", str(self.speed), "-p", str(self.pitch), "-g", str(self.word_gap)]


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: Voice = Voice(), rate: int = RATE) -> Audio:
    """The text spoken by espeak-ng, mono float32 at `rate` Hz (espeak-ng speaks at 22,050 Hz)."""
    out = subprocess.run(
        ["espeak-ng", *voice.args(), "--stdout", text], check=True, capture_output=True, timeout=60
    ).stdout
    # espeak-ng --stdout writes a 44-byte WAV header whose sizes are left at 0x7fffffff: read it ourselves.
    if out[:4] != b"RIFF" or out[36:40] != b"data":
        raise RuntimeError("espeak-ng wrote no WAV")
    source_rate = int.from_bytes(out[24:28], "little")
    pcm = np.frombuffer(out[44 : 44 + (len(out) - 44) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    return np.asarray(soxr.resample(pcm, source_rate, rate, quality="HQ"), dtype=np.float32)


def trim(audio: Audio, rate: int = RATE, floor_db: float = -45.0) -> Audio:
    """Drop leading and trailing silence: 5-ms windows quieter than `floor_db` below the peak."""
    win = max(1, rate // 200)
    n = audio.shape[0] // win
    if n == 0:
        return audio
    rms = np.sqrt((audio[: n * win].reshape(n, win) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > np.abs(audio).max() * 10 ** (floor_db / 20))
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0] * win : (loud[-1] + 1) * win]


@dataclass(frozen=True)
class Span:
    word: str
    start: float  # seconds
    end: float


def spoken_words(
    words: Sequence[str], gaps_s: Sequence[float], voice: Voice = Voice(), lead_s: float = 0.3, rate: int = RATE
) -> tuple[Audio, list[Span]]:
    """Each word spoken alone, trimmed to its sound, joined with the given silences (one fewer than the words),
    `lead_s` of silence at both ends: the audio and every word's true span."""
    if len(gaps_s) != max(0, len(words) - 1):
        raise ValueError("one gap between each two words")
    parts, spans = [np.zeros(int(lead_s * rate), np.float32)], []
    t = parts[0].shape[0]
    for i, word in enumerate(words):
        sound = trim(speak(word, voice, rate), rate)
        spans.append(Span(word, t / rate, (t + sound.shape[0]) / rate))
        parts.append(sound)
        t += sound.shape[0]
        gap = gaps_s[i] if i < len(gaps_s) else lead_s
        parts.append(np.zeros(int(gap * rate), np.float32))
        t += parts[-1].shape[0]
    return np.concatenate(parts), spans
