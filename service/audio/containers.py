"""What phones and browsers record, decoded by FFmpeg's libraries through PyAV (its wheels bundle them): MP4/M4A
with AAC, WebM/Matroska with Opus, ADTS AAC, AMR, and MPEG audio libsndfile refuses. The same contract as
libsndfile's source in service/audio/decode.py: the header's rate, channels and length first (so limits refuse before
anything is decoded), then float32 blocks of (frames, channels), never the whole file at the upload's rate.

The demuxer is named from the file's first bytes (service.audio.decode.sniff_container), never probed: FFmpeg's
probing can land on demuxers that open other files or URLs (playlists, concat lists); MP4 external data
references stay off (FFmpeg's default).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO

import av
import numpy as np
import numpy.typing as npt

from service.audio.source import BLOCK_FRAMES, FRAME_SYNCED
from service.errors import UndecodableAudio, UnsupportedFormat

# The container name each demuxer reports (Decoded.format; ASR_FORMATS takes these names).
NAMES = {"mov": "MP4", "matroska": "WEBM", "aac": "AAC", "amr": "AMR", "mp3": "MP3"}
# A header's length may round up to the container's time unit and the codec's last frame: this much shortfall
# is not "cut short".
LENGTH_SLACK_S = 0.1


class AVSource:
    def __init__(self, upload: BinaryIO, demuxer: str) -> None:
        try:
            self.container = av.open(upload, mode="r", format=demuxer)
        except (av.FFmpegError, ValueError, OSError):
            if demuxer in FRAME_SYNCED:
                raise UnsupportedFormat("the upload is not audio in a format we decode") from None
            message = f"the {NAMES[demuxer]} file is damaged or truncated: its header cannot be read"
            raise UndecodableAudio(message) from None
        audio = self.container.streams.audio
        if not audio:
            self.container.close()
            raise UnsupportedFormat(f"the {NAMES[demuxer]} file holds no audio stream")
        self.stream = audio[0]
        context = self.stream.codec_context
        self.rate, self.channels = int(context.sample_rate or 0), int(context.channels or 0)
        self.format, self.subtype = NAMES[demuxer], str(context.name).upper()
        self.declared_frames = self._declared_frames()

    def _declared_frames(self) -> int | None:
        """The audio stream's length from the header (MP4 knows it; WebM from a browser often does not)."""
        if self.stream.duration is not None and self.stream.time_base is not None:
            seconds = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration is not None and self.container.format.name.startswith(("mov", "matroska")):
            seconds = self.container.duration / av.time_base
        else:
            return None  # ADTS, AMR and MP3 lengths are FFmpeg's estimates from the bitrate: not a promise
        return int(seconds * self.rate) if seconds > 0 and self.rate > 0 else None

    def blocks(self) -> Iterator[npt.NDArray[np.float32]]:
        """Decoded frames converted to interleaved float32 by FFmpeg's resampler (rate and layout unchanged) and
        gathered into blocks of about BLOCK_FRAMES. Interleaved, one plane: PyAV 18 finds a frame's planes by
        walking its channel pointers until a null one, which runs past the last channel from 8 channels on (a
        7.1 AAC file, or a damaged header announcing 9: the process died reading a garbage pointer)."""
        converter = av.AudioResampler(format="flt")
        pending: list[npt.NDArray[np.float32]] = []
        held = 0
        try:
            for packet in self.container.demux(self.stream):
                for frame in packet.decode():
                    if frame.sample_rate != self.rate or len(frame.layout.channels) != self.channels:
                        raise UndecodableAudio("the audio changes its rate or channel count midway")
                    for converted in converter.resample(frame):
                        pending.append(self._frames(converted))
                        held += pending[-1].shape[0]
                if held >= BLOCK_FRAMES:
                    yield np.concatenate(pending)
                    pending, held = [], 0
            for converted in converter.resample(None):
                pending.append(self._frames(converted))
        except av.FFmpegError:
            raise UndecodableAudio(f"the {self.format} audio data is corrupt or truncated") from None
        if pending:
            yield np.concatenate(pending)

    def _frames(self, converted: av.AudioFrame) -> npt.NDArray[np.float32]:
        """An interleaved float32 frame as (frames, channels)."""
        return converted.to_ndarray().reshape(-1, self.channels).astype(np.float32, copy=False)

    def finished(self, frames: int) -> None:
        """A header that promises more audio than the file holds means the file was cut short: 400, as for WAV."""
        if self.declared_frames is not None and frames < self.declared_frames - LENGTH_SLACK_S * self.rate:
            raise UndecodableAudio(
                f"the {self.format} file is cut short: its header announces {self.declared_frames / self.rate:.2f} s "
                f"of audio, it holds {frames / self.rate:.2f} s"
            )

    def __enter__(self) -> AVSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.container.close()
