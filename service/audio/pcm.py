"""Raw audio as streams send it: 16-bit PCM and G.711 (mu-law, A-law) bytes -> float32 samples, and a
resampler that keeps its filter state from one piece of a stream to the next."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _g711_table(law: str) -> npt.NDArray[np.float32]:
    """G.711 byte -> sample in [-1, 1] (ITU-T G.711 expansion, as audioop's ulaw2lin / alaw2lin)."""
    codes = np.arange(256, dtype=np.int32)
    if law == "pcmu":
        u = ~codes & 0xFF
        exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        values = np.where(u & 0x80, -magnitude, magnitude)
    else:
        a = codes ^ 0x55
        exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
        magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
        values = np.where(a & 0x80, magnitude, -magnitude)
    return (values / 32768.0).astype(np.float32)


G711 = {"pcmu": _g711_table("pcmu"), "pcma": _g711_table("pcma")}
G711_RATE = 8000


def decode_pcm(data: bytes, kind: str) -> npt.NDArray[np.float32]:
    """Whole samples of `kind`: pcm (16-bit little-endian; an even number of bytes), pcmu or pcma (one byte a
    sample)."""
    if kind == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    table: npt.NDArray[np.float32] = G711[kind][np.frombuffer(data, np.uint8)]
    return table


class Resampler:
    """A stream's audio at `rate` -> `target`, piece by piece (soxr keeps its filter state between pieces)."""

    def __init__(self, rate: int, target: int) -> None:
        import soxr

        self.rate, self.target = rate, target
        self.stream = soxr.ResampleStream(rate, target, 1, dtype="float32") if rate != target else None

    def push(self, samples: npt.NDArray[np.float32], last: bool = False) -> npt.NDArray[np.float32]:
        """The resampled audio so far; `last` flushes the filter and starts afresh for what follows."""
        if self.stream is None:
            return samples
        out: npt.NDArray[np.float32] = self.stream.resample_chunk(samples, last=last)
        if last:
            self.__init__(self.rate, self.target)  # type: ignore[misc]
        return out
