"""Cut audio longer than one segment into utterances, never inside a word where a pause is near.

Audio no longer than one segment is never cut (so its transcript is exactly NeMo's). Longer audio is cut one
of two ways (ASR_SEGMENTER):
- `split_speech` (vad): by the speech probability of every 32-ms window (service/audio/vad.py). Speech regions,
  widened by `pad_s` on each side, become segments; regions closer than MERGE_GAP_S share a segment while it stays
  within a typical training utterance of the model (a model hears a segment of several utterances in different
  voices worse than each alone: docs/accuracy.md), or twice that after a breath (BREATH_S); what lies between
  segments (silence, music, noise) is not sent to the model. A region longer than twice that utterance (in babble
  the VAD hears speech throughout) is first cut in the middle of its pauses heard by energy (as `split` finds them).
  A region still longer than a segment is cut at its least speech-like window within the last quarter of each
  segment. A segment still longer than twice the utterance is heard again in pieces cut where the model's own words
  pause (split_at_gaps; service/pipeline/rehear.py).
- `split` (energy): at the centre of every pause of at least `min_pause_s` (a run of 20-ms windows whose
  energy is near the recording's own floor); a stretch still longer than a segment (speech with no pause) is
  cut at its quietest window within the last quarter of each segment. Nothing is skipped.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.audio.spill import Samples

FRAME_S = 0.02  # energy is measured over 20 ms windows
SEARCH_FRACTION = 0.25  # without a pause, look for the quietest window in the last quarter of a segment
MAX_SEARCH_S = 8.0
FLOOR_PERCENTILE = 10  # the recording's noise floor: this percentile of window energies
FLOOR_FACTOR = 4.0  # a window is quiet below 4x (+6 dB) the floor ...
ABSOLUTE_QUIET = 1e-8  # ... or below -80 dBFS


# Silero's own defaults for turning probabilities into speech regions (utils_vad.get_speech_timestamps)
SPEECH_THRESHOLD = 0.5  # a region starts at a window this likely to be speech ...
SILENCE_THRESHOLD = 0.35  # ... and ends where windows stay below this ...
MIN_SILENCE_S = 0.1  # ... for this long
MIN_SPEECH_S = 0.25  # shorter regions are dropped (clicks, coughs)
# A region longer than a segment is cut where (speech probability + PROB_FLOOR) x energy, both averaged over
# SMOOTH_WINDOWS (290 ms), is lowest: in babble every window is speech to the VAD, and a pause between the
# speaker's own sentences is still quieter.
SMOOTH_WINDOWS = 9
PROB_FLOOR = 0.05
MERGE_GAP_S = 1.0  # regions (padded) at most this far apart share a segment: context for the model
# Regions the VAD parts by less than BREATH_S (it ends one after 0.1 s below its threshold: a breath or a stop
# within a sentence; between sentences the VAD's pauses are longer, even in noise, in all but a few per cent)
# share a segment up to LONG_REGION x the target, not only the target: cut there, a sentence loses its context
# (docs/accuracy.md, "Long recordings").
BREATH_S = 0.2
# A region longer than LONG_REGION x the target is cut at pauses of at least PAUSE_IN_REGION_S whose energy is near
# the recording's floor (pause_centres): the speaker's own pauses under babble the VAD hears as speech. Shorter
# regions are single sentences in every benchmark mix; cutting them at their inner pauses costs accuracy
# (docs/accuracy.md, "Long recordings").
LONG_REGION = 2.0
PAUSE_IN_REGION_S = 0.3
# A piece between two such pauses whose mean energy is below BACKGROUND x the median piece's of its region holds
# only the babble (a long pause of the speaker): sent alone, its level normalised, the model hears words in it.
# It is not cut out: its two cuts become one in its middle, as a long pause between sentences is.
BACKGROUND = 0.5


@dataclass(frozen=True)
class Segment:
    start: int  # first sample, in the whole audio
    samples: Samples  # a view of the decoded audio (on disk for long audio: read when sent)
    no_speech_prob: float | None = None  # from the VAD: 1 - the highest speech probability within the segment


@dataclass(frozen=True)
class SpeechMap:
    """A VAD's verdict on a recording: the speech probability of each window."""

    probs: npt.NDArray[np.float32]
    window: float  # samples per probability, at the audio's rate (512 at the VAD's 16 kHz)
    rate: int  # the audio's sample rate

    @functools.cached_property
    def regions(self) -> list[tuple[int, int]]:
        """[start, end) samples of each speech region, unpadded (found once: cutting and speech_s both read it)."""
        seconds = self.window / self.rate
        found = _regions(self.probs, max(1, round(MIN_SILENCE_S / seconds)), max(1, round(MIN_SPEECH_S / seconds)))
        return [(round(lo * self.window), round(hi * self.window)) for lo, hi in found]

    def speech_s(self) -> float:
        return sum(hi - lo for lo, hi in self.regions) / self.rate

    def no_speech_prob(self, start: int, end: int) -> float:
        """1 - the highest speech probability of a window overlapping samples [start, end)."""
        lo = int(start // self.window)
        inside = self.probs[lo : max(lo + 1, math.ceil(end / self.window))]
        return round(1.0 - float(inside.max()), 4) if inside.size else 1.0


def _regions(probs: npt.NDArray[np.float32], min_silence: int, min_speech: int) -> list[tuple[int, int]]:
    """[first, last) windows of each region, by Silero's hysteresis: a region starts at a window of at least
    SPEECH_THRESHOLD and ends where `min_silence` windows in a row stay below SILENCE_THRESHOLD."""
    speech = probs >= SPEECH_THRESHOLD
    silence = probs < SILENCE_THRESHOLD
    found: list[tuple[int, int]] = []
    start = -1  # in a region since this window, or -1
    quiet_since = -1  # the current run of silence in a region began here, or -1
    for i in range(probs.shape[0]):
        if start < 0:
            if speech[i]:
                start, quiet_since = i, -1
        elif silence[i]:
            quiet_since = i if quiet_since < 0 else quiet_since
            if i + 1 - quiet_since >= min_silence:
                found.append((start, quiet_since))
                start = -1
        else:
            quiet_since = -1
    if start >= 0:
        found.append((start, probs.shape[0]))
    return [(lo, hi) for lo, hi in found if hi - lo >= min_speech]


def split_speech(
    samples: Samples, speech: SpeechMap, max_samples: int, pad_s: float, target_samples: int = 0
) -> list[Segment]:
    """Segments of at most `max_samples` holding every speech region (widened by `pad_s`), in order; the audio
    between them is left out. Audio no longer than one segment is one segment, whole.

    `target_samples` (a typical training utterance of the model; 0: none) shapes the segments like what the model
    was trained on: regions share a segment while it stays within the target (twice the target when they are less
    than BREATH_S apart), ending in the middle of a pause where the padding of its two sides would overlap. A region
    longer than the target stays whole (a cut would fall inside speech) up to `max_samples`, unless it is longer
    than LONG_REGION x the target and holds pauses heard by energy: then it is cut in their middle. Without a
    target, regions share a segment up to `max_samples`."""
    if max_samples <= 0:
        raise ValueError("max_samples must be positive")
    total = samples.shape[0]
    if total <= max_samples:
        return [Segment(0, samples, speech.no_speech_prob(0, total))]
    target = min(target_samples or max_samples, max_samples)
    pad, gap = round(pad_s * speech.rate), round(MERGE_GAP_S * speech.rate)
    regions = _cut_at_pauses(samples, speech, target_samples) if target_samples else speech.regions
    padded = [[max(0, lo - pad), min(total, hi + pad)] for lo, hi in regions]
    for k in range(1, len(padded)):
        if padded[k][0] < padded[k - 1][1]:  # the padding of a short pause's two sides overlaps: meet halfway
            padded[k - 1][1] = padded[k][0] = (regions[k - 1][1] + regions[k][0]) // 2
    breath = round(BREATH_S * speech.rate) if target_samples else 0
    # every padded region cut to at most a segment at its least speech-like point; each piece with the most its
    # segment may grow to as it joins it: twice the target after a breath, else the target
    pieces: list[tuple[int, int, int]] = []
    for k, (lo, hi) in enumerate(padded):
        after_breath = k > 0 and 0 < regions[k][0] - regions[k - 1][1] < breath
        limit = min(max_samples, round(LONG_REGION * target)) if after_breath else target
        while hi - lo > max_samples:
            cut = _least_speech_point(samples, speech, lo, max_samples)
            pieces.append((lo, cut, limit))
            lo, limit = cut, target
        pieces.append((lo, hi, limit))
    bounds: list[tuple[int, int]] = []  # near pieces share a segment while it stays within the limit
    for lo, hi, limit in pieces:
        if bounds and lo - bounds[-1][1] <= gap and hi - bounds[-1][0] <= limit:
            bounds[-1] = (bounds[-1][0], hi)
        else:
            bounds.append((lo, hi))
    return [Segment(lo, samples[lo:hi], speech.no_speech_prob(lo, hi)) for lo, hi in bounds]


def _cut_at_pauses(samples: Samples, speech: SpeechMap, target: int) -> list[tuple[int, int]]:
    """The VAD's regions, those longer than LONG_REGION x `target` cut at the centre of their pauses of at least
    PAUSE_IN_REGION_S (two pieces of one region touch: padding then meets at the cut), except around background."""
    regions = speech.regions
    longest = LONG_REGION * target
    if not any(hi - lo > longest for lo, hi in regions):
        return regions  # the common case: the recording is not read again
    frame = max(1, int(FRAME_S * speech.rate))
    energy = frame_energy(samples, frame)
    centres = np.asarray(quiet_centres(energy, frame, max(1, round(PAUSE_IN_REGION_S / FRAME_S))), np.int64)
    pieces: list[tuple[int, int]] = []
    for lo, hi in regions:
        inside = centres[(centres > lo) & (centres < hi)] if hi - lo > longest else centres[:0]
        edges = _around_background([lo, *(int(c) for c in inside), hi], energy, frame)
        pieces += itertools.pairwise(edges)
    return pieces


def _around_background(edges: list[int], energy: npt.NDArray[np.float64], frame: int) -> list[int]:
    """`edges` (a region's start, its cuts, its end) without the cuts around background pieces: a run of them
    between two pieces of speech is cut once, in its middle; at the region's start or end it joins its neighbour."""
    levels = []
    for lo, hi in itertools.pairwise(edges):
        inside = energy[lo // frame : max(lo // frame + 1, hi // frame)]
        levels.append(float(inside.mean()) if inside.size else 0.0)
    floor = BACKGROUND * float(np.median(levels))
    kept, i = [edges[0]], 0
    while i < len(levels):
        if levels[i] >= floor:
            if i > 0 and levels[i - 1] >= floor:
                kept.append(edges[i])
            i += 1
            continue
        j = i
        while j < len(levels) and levels[j] < floor:
            j += 1
        if i > 0 and j < len(levels):
            kept.append((edges[i] + edges[j]) // 2)
        i = j
    return [*kept, edges[-1]]


def split_at_gaps(start: int, end: int, gaps: Sequence[tuple[int, int]], target: int, edge: int) -> list[int]:
    """Cuts (samples, ascending) that leave [start, end) in pieces within `target` where they can: each at the
    centre of the longest of `gaps` ([from, to) samples: silences between words) in a piece still longer than the
    target, at least `edge` from that piece's ends. A piece without such a gap stays whole."""
    cuts: list[int] = []
    todo = [(start, end)]
    while todo:
        lo, hi = todo.pop()
        if hi - lo <= target:
            continue
        inside = [(b - a, (a + b) // 2) for a, b in gaps if lo + edge <= (a + b) // 2 <= hi - edge]
        if not inside:
            continue
        cut = max(inside)[1]
        cuts.append(cut)
        todo += [(lo, cut), (cut, hi)]
    return sorted(cuts)


def _least_speech_point(samples: Samples, speech: SpeechMap, start: int, max_samples: int) -> int:
    """Centre of the least speech-like window in the last quarter (at most MAX_SEARCH_S) of the segment that
    starts at `start`: where the speech probability times the energy, both averaged over SMOOTH_WINDOWS, is
    lowest."""
    search = max(1, min(int(max_samples * SEARCH_FRACTION), int(MAX_SEARCH_S * speech.rate)))
    end = start + max_samples
    lo, hi = math.ceil((end - search) / speech.window), int(end // speech.window)  # windows wholly inside
    if hi <= lo:
        return end
    smooth = _moving_average(speech.probs[lo:hi])
    bounds = np.round(np.arange(lo, hi + 1) * speech.window).astype(np.int64)
    power = np.asarray(samples[bounds[0] : bounds[-1]], dtype=np.float32) ** 2
    energy = _moving_average(np.add.reduceat(power, bounds[:-1] - bounds[0]) / np.diff(bounds))
    best = lo + int(np.argmin((smooth + PROB_FLOOR) * energy))
    return int(min(end, max(start + 1, round((best + 0.5) * speech.window))))


def _moving_average(values: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Mean over SMOOTH_WINDOWS centred on each value (fewer at the ends: no zero padding to attract a cut)."""
    kernel = np.ones(SMOOTH_WINDOWS)
    sums = np.convolve(values.astype(np.float64), kernel, mode="same")
    counts = np.convolve(np.ones(values.shape[0]), kernel, mode="same")
    averaged: npt.NDArray[np.float64] = sums / counts
    return averaged


def cut_by_speech(
    samples: Samples,
    rate: int,
    max_samples: int,
    pad_s: float,
    vad: VAD,
    stop: Callable[[], bool] = lambda: False,
    target_samples: int = 0,
) -> tuple[list[Segment], SpeechMap]:
    """Run the VAD over the audio and cut by its verdict (split_speech)."""
    speech = hear(samples, rate, vad, stop)
    return split_speech(samples, speech, max_samples, pad_s, target_samples), speech


def hear(samples: Samples, rate: int, vad: VAD, stop: Callable[[], bool] = lambda: False) -> SpeechMap:
    """The VAD's verdict on the audio (heard at the VAD's own rate, 16 kHz; the VAD reads it a block at a time)."""
    import soxr

    from service.audio.vad import RATE, WINDOW

    heard = samples if rate == RATE else np.asarray(soxr.resample(np.asarray(samples), rate, RATE), dtype=np.float32)
    return SpeechMap(vad.probabilities(heard, stop), WINDOW * rate / RATE, rate)


class VAD(Protocol):
    def probabilities(self, samples: Samples, stop: Callable[[], bool]) -> npt.NDArray[np.float32]: ...


def split(samples: Samples, max_samples: int, rate: int, min_pause_s: float = 0.3) -> list[Segment]:
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


ENERGY_BLOCK = 1 << 20  # samples per block of frame_energy: a float64 copy of the whole audio would be 2x its size


def frame_energy(samples: Samples, frame: int) -> npt.NDArray[np.float64]:
    """Mean square of every whole `frame` of the audio, a block at a time."""
    n = samples.shape[0] // frame
    energy = np.empty(n, np.float64)
    step = max(1, ENERGY_BLOCK // frame)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        windows = np.asarray(samples[lo * frame : hi * frame], dtype=np.float64).reshape(hi - lo, frame)
        energy[lo:hi] = (windows**2).mean(axis=1)
    return energy


def pause_centres(samples: Samples, frame: int, min_frames: int) -> list[int]:
    """Sample index of the centre of every run of at least `min_frames` quiet windows (ends excluded)."""
    return quiet_centres(frame_energy(samples, frame), frame, min_frames)


def quiet_centres(energy: npt.NDArray[np.float64], frame: int, min_frames: int) -> list[int]:
    """pause_centres() from the energy of every `frame` of the recording."""
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


def _quietest_point(samples: Samples, lo: int, hi: int, frame: int) -> int:
    """Centre of the lowest-energy `frame`-long window within [lo, hi] (the latest one among equals)."""
    energy = frame_energy(samples[lo:hi], frame)
    if energy.size == 0:
        return hi
    best = energy.size - 1 - int(np.argmin(energy[::-1]))
    return int(min(hi, lo + best * frame + frame // 2))
