"""A long segment heard again in pieces cut where the model's words pause; the hearing the model is surer of kept.

Where the VAD hears speech throughout (babble) and no pause stands out of it by energy (at 5 dB), a segment may
hold several sentences up to ASR_SEGMENT_S. In several voices the model hears such a segment worse than each
sentence alone; one speaker's long segment it hears as well as or better than its pieces (docs/accuracy.md, "Long
recordings"). Its first hearing shows where its own words pause: a segment longer than LONG_REGION x the target
is cut at the centre of its longest silences between words (segment.split_at_gaps), its pieces are heard, and
whichever hearing has the higher mean word confidence is kept, segment by segment.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from service.audio.segment import LONG_REGION, PAUSE_IN_REGION_S, Segment, SpeechMap, split_at_gaps
from service.audio.spill import Samples
from service.recognition.transcript import TimedWord

EDGE_S = 1.0  # no cut nearer than this to a piece's ends: no piece of a word or two, heard without context

WordsOf = Callable[[Segment, Any], list[TimedWord]]  # a segment's result -> its words, timed in the whole audio
Recognize = Callable[[list[Samples]], Awaitable[list[Any]]]


def mean_confidence(words: Sequence[TimedWord]) -> float:
    return sum(w.confidence for w in words) / len(words) if words else 0.0


def word_gaps(words: Sequence[TimedWord], rate: int, min_gap_s: float) -> list[tuple[int, int]]:
    """[end of a word, start of the next) in samples, for every silence of at least `min_gap_s` between words."""
    return [
        (round(a.end * rate), round(b.start * rate))
        for a, b in itertools.pairwise(words)
        if b.start - a.end >= min_gap_s
    ]


def pieces(
    samples: Samples, segment: Segment, words: Sequence[TimedWord], speech: SpeechMap, target: int
) -> list[Segment]:
    """`segment` cut at the centres of its words' longest gaps into pieces within `target` (as far as its gaps
    allow); [] when it has no gap to cut at."""
    start, end, rate = segment.start, segment.start + segment.samples.shape[0], speech.rate
    cuts = split_at_gaps(start, end, word_gaps(words, rate, PAUSE_IN_REGION_S), target, round(EDGE_S * rate))
    return [
        Segment(lo, samples[lo:hi], speech.no_speech_prob(lo, hi)) for lo, hi in itertools.pairwise([start, *cuts, end])
    ]


async def rehear(
    samples: Samples,
    segments: Sequence[Segment],
    results: Sequence[Any],
    speech: SpeechMap,
    target: int,
    words_of: WordsOf,
    recognize: Recognize,
) -> tuple[list[Segment], list[Any]]:
    """The segments and their results, each long segment replaced by its pieces where the model is surer of them.
    The pieces of every long segment are heard in one `recognize` call (batched with each other)."""
    plans: dict[int, tuple[list[Segment], float]] = {}  # segment index -> its pieces, its words' mean confidence
    for i, (segment, result) in enumerate(zip(segments, results, strict=True)):
        if target > 0 and segment.samples.shape[0] > LONG_REGION * target:
            words = words_of(segment, result)
            cut = pieces(samples, segment, words, speech, target)
            if cut:
                plans[i] = (cut, mean_confidence(words))
    if not plans:
        return list(segments), list(results)
    heard = iter(await recognize([p.samples for cut, _ in plans.values() for p in cut]))
    kept_segments: list[Segment] = []
    kept_results: list[Any] = []
    for i, (segment, result) in enumerate(zip(segments, results, strict=True)):
        cut, first = plans.get(i, ([], 0.0))
        again = [next(heard) for _ in cut]
        if cut and mean_confidence([w for p, r in zip(cut, again, strict=True) for w in words_of(p, r)]) > first:
            kept_segments += cut
            kept_results += again
        else:
            kept_segments.append(segment)
            kept_results.append(result)
    return kept_segments, kept_results
