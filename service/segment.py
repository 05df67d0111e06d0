"""Cut audio longer than one segment at its quietest points, so that no word is cut where a pause is near."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FRAME_S = 0.02  # energy is measured over 20 ms windows
SEARCH_FRACTION = 0.25  # look for the quietest window in the last quarter of each segment
MAX_SEARCH_S = 8.0


@dataclass(frozen=True)
class Segment:
    start: int  # first sample, in the whole audio
    samples: npt.NDArray[np.float32]


def split(samples: npt.NDArray[np.float32], max_samples: int, rate: int) -> list[Segment]:
    """Contiguous, non-overlapping segments of at most `max_samples` that together are the whole audio."""
    if max_samples <= 0:
        raise ValueError("max_samples must be positive")
    total = samples.shape[0]
    if total <= max_samples:
        return [Segment(0, samples)]
    frame = max(1, int(FRAME_S * rate))
    search = max(frame, min(int(max_samples * SEARCH_FRACTION), int(MAX_SEARCH_S * rate)))
    segments: list[Segment] = []
    start = 0
    while total - start > max_samples:
        end = start + max_samples
        cut = _quietest_point(samples, max(start + 1, end - search), end, frame)
        segments.append(Segment(start, samples[start:cut]))
        start = cut
    segments.append(Segment(start, samples[start:]))
    return segments


def _quietest_point(samples: npt.NDArray[np.float32], lo: int, hi: int, frame: int) -> int:
    """Centre of the lowest-energy `frame`-long window within [lo, hi] (the latest one among equals)."""
    window = samples[lo:hi].astype(np.float64)
    n = window.shape[0] // frame
    if n == 0:
        return hi
    energy = (window[: n * frame].reshape(n, frame) ** 2).sum(axis=1)
    best = n - 1 - int(np.argmin(energy[::-1]))
    return int(min(hi, lo + best * frame + frame // 2))
