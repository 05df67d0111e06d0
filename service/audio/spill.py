"""Decoded audio too long to hold in memory: float32 samples in an unnamed temporary file, read a stretch at a time.

Three hours at 16 kHz are 660 MB of float32. The file pipeline reads decoded audio only in stretches (the VAD's
blocks, the windows it weighs for a cut, the segments in flight: service/pipeline/client.py sends at most a few
at once), so audio over SPILL_BYTES is written to disk as it is decoded and a request's memory stays flat however
long its audio. A slice of DiskSamples is another view (nothing read); np.asarray() reads it, exactly the samples
written."""

from __future__ import annotations

import os
import tempfile
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from service.errors import Overloaded

SPILL_BYTES = 32 * 1024 * 1024  # 8.7 minutes at 16 kHz; a segment (30 s) is 1.9 MB
ITEM = 4  # bytes per float32 sample
NO_ROOM = "the server's temporary disk has no room for this audio now; retry later"


class DiskSamples:
    """Mono float32 samples [start, start + length) of a file: sliced like a 1-D array, read by np.asarray."""

    dtype = np.dtype(np.float32)
    ndim = 1

    def __init__(self, file: BinaryIO, start: int, length: int) -> None:
        self.file, self.start, self.length = file, start, length  # the file closes when no view holds it

    @property
    def shape(self) -> tuple[int]:
        return (self.length,)

    @property
    def size(self) -> int:
        return self.length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice) -> DiskSamples:
        if not isinstance(key, slice):
            raise TypeError("DiskSamples takes slices (read a stretch with np.asarray)")
        lo, hi, step = key.indices(self.length)
        if step != 1:
            raise ValueError("DiskSamples takes contiguous slices")
        return DiskSamples(self.file, self.start + lo, max(0, hi - lo))

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        out = np.empty(self.length, np.float32)
        if self.length:
            view = out.data.cast("B")
            done, offset, fd = 0, self.start * ITEM, self.file.fileno()
            while done < view.nbytes:  # pread: no shared file position between the threads that read
                got = os.preadv(fd, [view[done:]], offset + done)
                if got <= 0:
                    raise OSError("the decoded audio's file is shorter than written")
                done += got
        return out if dtype is None else out.astype(dtype, copy=False)


Samples = npt.NDArray[np.float32] | DiskSamples


class SampleSink:
    """Where a decoder puts its output: one array in memory, moved to an unnamed temporary file once it would
    pass SPILL_BYTES (or from the start, when the header's length says it will)."""

    def __init__(self, expected: int, spill_bytes: int | None = None) -> None:
        self.spill_bytes = SPILL_BYTES if spill_bytes is None else spill_bytes
        self.used = 0
        self.file: BinaryIO | None = None
        self.out = np.empty(0, np.float32)
        if expected * ITEM > self.spill_bytes:
            self._to_disk()
        else:
            self.out = np.empty(expected, np.float32)

    def _to_disk(self) -> None:
        try:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 (DiskSamples views hold it; closed with the last)
            self.file.write(self.out[: self.used].data.cast("B"))
        except OSError as exc:
            raise Overloaded(NO_ROOM) from exc
        self.out = np.empty(0, np.float32)

    def put(self, piece: npt.NDArray[np.float32]) -> None:
        if self.file is None and (self.used + piece.shape[0]) * ITEM > self.spill_bytes:
            self._to_disk()
        if self.file is not None:
            try:
                self.file.write(np.ascontiguousarray(piece, np.float32).data.cast("B"))
            except OSError as exc:
                raise Overloaded(NO_ROOM) from exc
        else:
            if self.used + piece.shape[0] > self.out.shape[0]:  # the header's length was short or unknown: grow
                grown = np.empty(max(self.out.shape[0] * 2, self.used + piece.shape[0]), np.float32)
                grown[: self.used] = self.out[: self.used]
                self.out = grown
            self.out[self.used : self.used + piece.shape[0]] = piece
        self.used += piece.shape[0]

    def samples(self) -> Samples:
        """The output: in memory (the slack of a grown array let go), or on disk."""
        if self.file is not None:
            try:
                self.file.flush()
            except OSError as exc:
                raise Overloaded(NO_ROOM) from exc
            return DiskSamples(self.file, 0, self.used)
        out = self.out
        return out[: self.used] if out.shape[0] - self.used <= max(1024, self.used // 64) else out[: self.used].copy()
