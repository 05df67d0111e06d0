"""Cut audio longer than one segment into utterances at its pauses, never cutting a word where a pause is near.

Audio no longer than one segment is never cut (so its transcript is exactly NeMo's). Longer audio is cut at
the centre of every pause of at least `min_pause_s` (a run of 20-ms windows whose energy is near the
recording's own floor), so that each segment is one utterance; a stretch still longer than a segment
(speech with no pause) is cut at its quietest window within the last quarter of each segment.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FRAME_S = 0.02  # energy is measured over 20 ms windows
SEARCH_FRACTION = 0.25  # without a pause, look for the quietest window in the last quarter of a segment
MAX_SEARCH_S = 8.0
FLOOR_PERCENTILE = 10  # the recording's noise floor: this percentile of window energies
FLOOR_FACTOR = 4.0  # a window is quiet below 4x (+6 dB) the floor ...
ABSOLUTE_QUIET = 1e-8  # ... or below -80 dBFS


@dataclass(frozen=True)
class Segment:
    start: int  # first sample, in the whole audio
    samples: npt.NDArray[np.float32]


def split(samples: npt.NDArray[np.float32], max_samples: int, rate: int, min_pause_s: float = 0.3) -> list[Segment]:
    """Contiguous, non-overlapping segments of at most `max_samples` that together are the whole audio."""
    if max_samples <= 0:
        raise ValueError("max_samples must be positive")
    total = samples.shape[0]
    if total <= max_samples:
        return [Segment(0, samples)]
    frame = max(1, int(FRAME_S * rate))
    bounds = [0, *pause_centres(samples, frame, max(1, round(min_pause_s / FRAME_S))), total]
    segments: list[Segment] = []
    for lo, hi in itertools.pairwise(bounds):
        start = lo
        while hi - start > max_samples:  # an utterance longer than a segment: cut where it is quietest
            search = max(frame, min(int(max_samples * SEARCH_FRACTION), int(MAX_SEARCH_S * rate)))
            end = start + max_samples
            cut = _quietest_point(samples, max(start + 1, end - search), end, frame)
            segments.append(Segment(start, samples[start:cut]))
            start = cut
        if hi > start:
            segments.append(Segment(start, samples[start:hi]))
    return segments


def frame_energy(samples: npt.NDArray[np.float32], frame: int) -> npt.NDArray[np.float64]:
    n = samples.shape[0] // frame
    windows = samples[: n * frame].astype(np.float64).reshape(n, frame)
    energy: npt.NDArray[np.float64] = (windows**2).mean(axis=1)
    return energy


def pause_centres(samples: npt.NDArray[np.float32], frame: int, min_frames: int) -> list[int]:
    """Sample index of the centre of every run of at least `min_frames` quiet windows (ends excluded)."""
    energy = frame_energy(samples, frame)
    if energy.size == 0:
        return []
    threshold = max(ABSOLUTE_QUIET, FLOOR_FACTOR * float(np.percentile(energy, FLOOR_PERCENTILE)))
    quiet = np.r_[False, energy <= threshold, False].astype(np.int8)
    edges = np.diff(quiet)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # run = [start, end) in frames
    centres = []
    for s, e in zip(starts, ends, strict=True):
        if e - s >= min_frames and s > 0 and e < energy.size:  # a pause between sounds, not a leading/trailing one
            centres.append(int((s + e) * frame // 2))
    return centres


def _quietest_point(samples: npt.NDArray[np.float32], lo: int, hi: int, frame: int) -> int:
    """Centre of the lowest-energy `frame`-long window within [lo, hi] (the latest one among equals)."""
    energy = frame_energy(samples[lo:hi], frame)
    if energy.size == 0:
        return hi
    best = energy.size - 1 - int(np.argmin(energy[::-1]))
    return int(min(hi, lo + best * frame + frame // 2))
