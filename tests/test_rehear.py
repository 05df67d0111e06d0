"""A long segment heard again in pieces cut at its words' longest gaps; the hearing the model is surer of kept."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from service.audio.segment import Segment, SpeechMap, split_at_gaps
from service.pipeline.rehear import rehear
from service.recognition.transcript import TimedWord

RATE = 16000
TARGET = 4 * RATE


def s(seconds: float) -> int:
    return round(seconds * RATE)


def test_the_longest_gap_is_cut_first_until_pieces_are_within_the_target() -> None:
    gaps = [(2.0, 2.3), (5.0, 5.8), (9.0, 9.4), (12.0, 12.5), (15.0, 15.35), (18.0, 18.3), (19.5, 19.9)]
    cuts = split_at_gaps(0, s(20), [(s(a), s(b)) for a, b in gaps], TARGET, s(1.0))
    # 5.4 (the longest gap) first, then 2.15 and 12.25 in its two sides, then 9.2, 15.175 and 18.15; the gap at
    # 19.7 lies within a second of the end
    assert cuts == [s(2.15), s(5.4), s(9.2), s(12.25), s(15.175), s(18.15)]
    pieces = np.diff([0, *cuts, s(20)])
    assert pieces.max() <= TARGET


def test_longest_first_differs_from_first_found() -> None:
    # a short gap early and a long one later: one cut (the long gap) leaves both sides within the target
    gaps = [(s(2.0), s(2.3)), (s(3.5), s(4.5))]
    assert split_at_gaps(0, s(8.0), gaps, TARGET, s(1.0)) == [s(4.0)]


def test_without_a_gap_away_from_the_ends_nothing_is_cut() -> None:
    assert split_at_gaps(0, s(20), [], TARGET, s(1.0)) == []
    assert split_at_gaps(0, s(20), [(s(0.2), s(0.9)), (s(19.2), s(19.8))], TARGET, s(1.0)) == []
    assert split_at_gaps(0, s(3.5), [(s(1.5), s(2.0))], TARGET, s(1.0)) == []  # within the target already


class Heard:
    """A fake model: a result is the (start, end) it heard; words as given per span, else one per second."""

    def __init__(self, words: dict[tuple[int, int], list[TimedWord]]) -> None:
        self.words, self.calls = words, []

    def words_of(self, segment: Segment, result: Any) -> list[TimedWord]:
        assert result == (segment.start, segment.start + segment.samples.shape[0])
        return self.words[result]

    async def recognize(self, items: list[Any]) -> list[Any]:
        self.calls.append(items)
        return [self.span_of(item) for item in items]

    def span_of(self, item: Any) -> tuple[int, int]:
        start = int(np.asarray(item)[0])  # the audio is its own sample index
        return start, start + item.shape[0]


def words(spans: list[tuple[float, float]], confidence: float) -> list[TimedWord]:
    return [TimedWord("शब्द", a, b, confidence) for a, b in spans]


LONG_WORDS = [(0.3, 1.0), (1.2, 3.0), (3.5, 5.9), (6.3, 8.0), (8.2, 9.6)]  # gaps of 0.5 (3.25) and 0.4 s (6.1)


def run(heard: Heard, segments: list[Segment], target: int = TARGET) -> tuple[list[Segment], list[Any]]:
    audio = np.arange(s(20), dtype=np.float32)
    speech = SpeechMap(np.linspace(0.2, 0.9, s(20) // 512).astype(np.float32), 512.0, RATE)
    results = [(g.start, g.start + g.samples.shape[0]) for g in segments]
    return asyncio.run(rehear(audio, segments, results, speech, target, heard.words_of, heard.recognize))


def segments_of(spans: list[tuple[float, float]]) -> list[Segment]:
    audio = np.arange(s(20), dtype=np.float32)
    return [Segment(s(a), audio[s(a) : s(b)]) for a, b in spans]


@pytest.mark.parametrize(("confidence", "kept"), [(0.8, "pieces"), (0.6, "first"), (0.5, "first")])
def test_the_surer_hearing_is_kept(confidence: float, kept: str) -> None:
    pieces = [(0, s(3.25)), (s(3.25), s(6.1)), (s(6.1), s(10))]
    heard = Heard(
        {
            (0, s(10)): words(LONG_WORDS, 0.6),
            (s(12), s(15)): words([(12.5, 14.0)], 0.1),  # no longer than twice the target: never heard again
            pieces[0]: words(LONG_WORDS[:2], confidence),
            pieces[1]: words(LONG_WORDS[2:3], confidence),
            pieces[2]: words(LONG_WORDS[3:], confidence),
        }
    )
    segments = segments_of([(0, 10), (12, 15)])
    got, results = run(heard, segments)
    (call,) = heard.calls  # every piece in one call, its audio the piece's
    assert [heard.span_of(item) for item in call] == pieces
    if kept == "pieces":
        assert [(g.start, g.start + g.samples.shape[0]) for g in got] == [*pieces, (s(12), s(15))]
        assert results == [*pieces, (s(12), s(15))]
        speech = SpeechMap(np.linspace(0.2, 0.9, s(20) // 512).astype(np.float32), 512.0, RATE)
        assert [g.no_speech_prob for g in got[:3]] == [speech.no_speech_prob(a, b) for a, b in pieces]
    else:
        assert got == segments and results == [(0, s(10)), (s(12), s(15))]


def test_short_segments_or_no_target_are_heard_once() -> None:
    heard = Heard(
        {
            (0, s(8)): words(LONG_WORDS[:4], 0.5),
            (s(9), s(20)): words([(10, 11), (13, 14)], 0.5),
            (s(9), s(12)): words([(10, 11)], 0.4),
            (s(12), s(20)): words([(13, 14)], 0.4),
        }
    )
    segments = segments_of([(0, 8), (9, 20)])
    # 0-8 s is no longer than twice the target: heard once; 9-20 s is cut at its one gap (8 s without a gap stay)
    got, _ = run(heard, segments, target=TARGET)
    assert [[heard.span_of(i) for i in call] for call in heard.calls] == [[(s(9), s(12)), (s(12), s(20))]]
    assert got == segments  # the pieces were heard less surely
    heard.calls.clear()
    got, _ = run(heard, segments, target=0)
    assert heard.calls == [] and got == segments
