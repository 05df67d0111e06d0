"""Encode test audio in every container/codec the service accepts: soundfile writes what libsndfile reads;
FFmpeg's own muxers and encoders (through PyAV, which bundles FFmpeg's libraries) write what phones and
browsers record."""

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
    ("m4a-aac", "MP4", "AAC"),
    ("webm-opus", "WEBM", "OPUS"),
    ("adts-aac", "AAC", "AAC"),
]
# container -> (FFmpeg muxer, encoder)
FFMPEG = {"MP4": ("ipod", "aac"), "WEBM": ("webm", "libopus"), "AAC": ("adts", "aac"), "AMR": ("amr", "amr_nb")}
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}  # FFmpeg's layout for a channel count


def encode(audio: npt.NDArray[np.float32], rate: int, container: str = "WAV", subtype: str = "PCM_16") -> bytes:
    """(frames,) or (frames, channels) float32 -> the bytes of a file."""
    if container in FFMPEG:
        return ffmpeg_encode(audio, rate, container)
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def _crc(data: bytes, poly: int, bits: int) -> int:
    top, mask, crc = 1 << (bits - 1), (1 << bits) - 1, 0
    for byte in data:
        crc ^= byte << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's frame number: UTF-8's variable-length coding of an integer."""
    if n < 0x80:
        return bytes([n])
    payload: list[int] = []
    while True:
        payload.insert(0, 0x80 | (n & 0x3F))
        n >>= 6
        lead_bits = 6 - len(payload)  # bits left in the first byte
        if n < (1 << lead_bits):
            prefix = (0xFF << (7 - len(payload))) & 0xFF
            return bytes([prefix | n, *payload])


def silent_flac(rate: int, channels: int, seconds: float, block: int = 4096) -> bytes:
    """A real FLAC stream of digital silence, written frame by frame (constant subframes, 16 bits), in a second
    where libFLAC takes minutes for an hour at 384 kHz: a few MB that decode to GBs of samples. The length must
    be a whole number of blocks."""
    frames, rest = divmod(round(seconds * rate), block)
    if rest or block != 4096 or not 1 <= channels <= 8:
        raise ValueError("whole 4096-sample blocks and 1-8 channels only")
    info = (
        block.to_bytes(2, "big") * 2
        + (0).to_bytes(3, "big") * 2
        + ((rate << 44) | ((channels - 1) << 41) | (15 << 36) | (frames * block)).to_bytes(8, "big")
        + bytes(16)  # MD5 unknown
    )
    head = b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info
    # sync + fixed blocking; block size code 0b1100 (4096), rate from STREAMINFO; channels; 16 bits
    fixed = bytes([0xFF, 0xF8, 0xC0, ((channels - 1) << 4) | (0b100 << 1)])
    subframes = bytes([0x00, 0x00, 0x00]) * channels  # CONSTANT subframe, value 0
    table16 = [_crc(bytes([b]), 0x8005, 16) for b in range(256)]
    out = [head]
    for n in range(frames):
        header = fixed + _utf8_number(n)
        header += bytes([_crc(header, 0x07, 8)])
        frame = header + subframes
        crc = 0
        for byte in frame:
            crc = ((crc << 8) & 0xFFFF) ^ table16[(crc >> 8) ^ byte]
        out.append(frame + crc.to_bytes(2, "big"))
    return b"".join(out)


class _Stream(io.RawIOBase):
    """A pipe-like output FFmpeg cannot seek back in, as a browser's MediaRecorder writes: no length in the
    header."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def ffmpeg_encode(audio: npt.NDArray[np.float32], rate: int, container: str, streamed: bool = False) -> bytes:
    """FFmpeg's muxer and encoder for `container` (MP4 = M4A with AAC, WEBM with Opus, AAC = ADTS, AMR-NB).
    streamed: written as a live stream (WebM: no duration, as browsers record)."""
    import av

    muxer, codec = FFMPEG[container]
    frames = np.ascontiguousarray(audio[:, None] if audio.ndim == 1 else audio, dtype=np.float32)
    out: io.RawIOBase | io.BytesIO = _Stream() if streamed else io.BytesIO()
    with av.open(out, "w", format=muxer, options={"live": "1"} if streamed else {}) as file:
        stream = file.add_stream(codec, rate=rate, layout=LAYOUTS[frames.shape[1]])
        # interleaved: PyAV 18 miscounts the planes of a planar frame of 8 channels (service/audio/containers.py)
        frame = av.AudioFrame.from_ndarray(frames.reshape(1, -1), format="flt", layout=stream.layout.name)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            file.mux(packet)
    return bytes(out.data) if isinstance(out, _Stream) else out.getvalue()
