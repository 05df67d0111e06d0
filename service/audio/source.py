"""What the decoders share: the view of an upload each container reader gives (service/audio/decode.py reads
with libsndfile, service/audio/containers.py with FFmpeg), and the block size both read in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import numpy.typing as npt

BLOCK_FRAMES = 1 << 16  # frames per block: at most 16 MB even at 64 channels

# Signatures too short to be sure of: bytes that merely start like an audio frame and that FFmpeg cannot read
# are not audio (415), where an MP4, WebM or AMR file FFmpeg cannot read is a damaged one (400).
FRAME_SYNCED = frozenset({"aac", "mp3"})


class Source(Protocol):
    """A decoder's view of an upload: what its header says, then float32 blocks of (frames, channels)."""

    rate: int
    channels: int
    format: str  # container: WAV, FLAC, OGG, MP3, MP4, WEBM, ...
    subtype: str  # PCM_16, VORBIS, OPUS, AAC, ...
    declared_frames: int | None  # from the header; None when it does not say

    def blocks(self) -> Iterator[npt.NDArray[np.float32]]: ...

    def finished(self, frames: int) -> None:
        """Called after the last block with the frames read: raises when the file was cut short."""
