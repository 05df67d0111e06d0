"""Long audio is cut at quiet points into contiguous segments that are the whole audio."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.audio.segment import split

RATE = 16000


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 400_000), st.integers(1600, 100_000), st.integers(0, 2**31))
def test_segments_cover_everything_once(total: int, max_samples: int, seed: int) -> None:
    audio = np.random.default_rng(seed).standard_normal(total).astype(np.float32)
    segments = split(audio, max_samples, RATE)
    assert all(0 < s.samples.shape[0] <= max_samples for s in segments)
    assert [s.start for s in segments] == list(np.cumsum([0] + [s.samples.shape[0] for s in segments[:-1]]))
    assert np.array_equal(np.concatenate([s.samples for s in segments]), audio)


def test_short_audio_is_one_untouched_segment() -> None:
    audio = np.ones(1000, np.float32)
    (only,) = split(audio, 1000, RATE)
    assert only.start == 0 and only.samples is audio


def test_cuts_fall_in_pauses() -> None:
    rng = np.random.default_rng(1)
    loud = lambda s: (0.3 * rng.standard_normal(int(s * RATE))).astype(np.float32)  # noqa: E731
    quiet = np.zeros(int(0.3 * RATE), np.float32)
    audio = np.concatenate([loud(8.5), quiet, loud(8), quiet, loud(5)])  # pauses in the last quarter
    segments = split(audio, 10 * RATE, RATE)
    for s in segments[1:]:
        assert np.all(audio[s.start - 80 : s.start + 80] == 0)  # the cut is inside a pause


def test_long_audio_becomes_one_segment_per_utterance() -> None:
    rng = np.random.default_rng(2)
    pause = np.zeros(int(0.5 * RATE), np.float32)
    parts, spans, t = [pause], [], pause.shape[0]
    for seconds in (2.0, 3.5, 1.2, 4.0, 2.5):
        speech = (0.2 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
        spans.append((t, t + speech.shape[0]))
        parts += [speech, pause]
        t += speech.shape[0] + pause.shape[0]
    audio = np.concatenate(parts)
    segments = split(audio, 10 * RATE, RATE, min_pause_s=0.3)
    assert len(segments) == len(spans)
    for seg, (lo, hi) in zip(segments, spans, strict=True):  # each segment holds one utterance, whole
        assert seg.start <= lo and hi <= seg.start + seg.samples.shape[0]
    assert split(audio, audio.shape[0], RATE)[0].samples is audio  # not longer than a segment: never cut
