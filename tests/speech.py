"""Real Hindi speech for tests: espeak-ng (`-v hi`) through sox, at 16 kHz mono, cached per sentence."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

SENTENCES = [
    "नमस्ते आप कैसे हैं",
    "भारत एक विशाल और सुंदर देश है",
    "हम कल सुबह बाज़ार जाएँगे",
    "किसान खेत में काम कर रहा है",
    "कृपया धीरे बोलिए ताकि सब समझ सकें",
    "गंगा नदी हिमालय से निकलती है",
]
RATE = 16000


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


@functools.lru_cache(maxsize=64)
def hindi(text: str, rate: int = RATE) -> npt.NDArray[np.float32]:
    """One sentence spoken by espeak-ng's Hindi voice, converted by sox to `rate` Hz mono float."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", "hi", "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(
            ["sox", str(raw), "-r", str(rate), "-c", "1", "-e", "floating-point", "-b", "32", str(out)],
            check=True,
            capture_output=True,
        )
        audio, _ = sf.read(out, dtype="float32")
    return np.asarray(audio, dtype=np.float32)


def noise(seconds: float, seed: int, level: float = 0.05, rate: int = RATE) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def joined(texts: list[str], pause_s: float, rate: int = RATE) -> tuple[npt.NDArray[np.float32], list[float]]:
    """Sentences separated by silent pauses; returns the audio and each sentence's start time (s)."""
    gap = np.zeros(int(pause_s * rate), np.float32)
    parts, starts, t = [gap], [], pause_s
    for text in texts:
        speech = hindi(text, rate)
        starts.append(t)
        parts += [speech, gap]
        t += (speech.shape[0] + gap.shape[0]) / rate
    return np.concatenate(parts), starts
