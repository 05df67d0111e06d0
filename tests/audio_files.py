"""Encode test audio in every container/codec the service accepts (soundfile writes them all)."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import soundfile as sf

# (label, container, subtype): what people send.
ENCODINGS = [
    ("wav-u8", "WAV", "PCM_U8"),
    ("wav-16", "WAV", "PCM_16"),
    ("wav-24", "WAV", "PCM_24"),
    ("wav-32", "WAV", "PCM_32"),
    ("wav-float", "WAV", "FLOAT"),
    ("flac", "FLAC", "PCM_16"),
    ("ogg-vorbis", "OGG", "VORBIS"),
    ("ogg-opus", "OGG", "OPUS"),
    ("mp3", "MP3", "MPEG_LAYER_III"),
]


def encode(audio: npt.NDArray[np.float32], rate: int, container: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=container, subtype=subtype)
    return buffer.getvalue()
