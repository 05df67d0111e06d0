"""Stitching segments into one transcript; subtitles. Property tests: nothing lost, doubled or out of order."""

from __future__ import annotations

import io
import itertools

import numpy as np
import srt as srt_lib
import webvtt
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.formats import LINE_CHARS, MAX_CUE_S, openai_verbose, render
from service.audio.segment import Segment
from service.manifest import TokenizerSpec
from service.recognition.recognizer import SegmentResult
from service.recognition.tokens import Detokenizer
from service.recognition.transcript import SegmentText, TimedWord, Transcript, assemble

VOCAB = ["▁नमस्ते", "▁आप", "▁कैसे", "▁हैं", "जी", "▁भारत", "।", "▁देश"]
DETOK = Detokenizer(VOCAB, TokenizerSpec(kind="sentencepiece", punctuation=["।"]))
RATE, SHIFT = 16000, 0.04


@st.composite
def segment_results(draw: st.DrawFn) -> tuple[list[Segment], list[SegmentResult]]:
    segments, results, start = [], [], 0
    for _ in range(draw(st.integers(1, 6))):
        frames = draw(st.integers(1, 200))
        n = frames * 640
        segments.append(Segment(start, np.zeros(n, np.float32)))
        ids = draw(st.lists(st.integers(0, len(VOCAB) - 1), max_size=min(frames, 15)))
        firsts = sorted(draw(st.lists(st.integers(0, frames - 1), min_size=len(ids), max_size=len(ids), unique=True)))
        lasts = [
            min(f + draw(st.integers(0, 3)), (firsts[k + 1] - 1) if k + 1 < len(firsts) else frames - 1)
            for k, f in enumerate(firsts)
        ]
        probs = [draw(st.floats(0.01, 1.0)) for _ in ids]
        results.append(
            SegmentResult(token_ids=ids, first_frame=firsts, last_frame=lasts, probability=probs, frames=frames)
        )
        start += n
    return segments, results


@settings(max_examples=300, deadline=None)
@given(segment_results())
def test_stitching_loses_and_doubles_nothing(data: tuple[list[Segment], list[SegmentResult]]) -> None:
    segments, results = data
    duration = (segments[-1].start + segments[-1].samples.shape[0]) / RATE
    t = assemble(segments, results, DETOK, SHIFT, RATE, duration)
    per_segment = [DETOK.text(r.token_ids).strip() for r in results]
    assert t.text.split() == " ".join(p for p in per_segment if p).split()  # every segment's words, once, in order
    for span in t.segments:  # the timed words are exactly each segment's words
        assert [w.word for w in span.words] == span.text.split()
    starts = [w.start for w in t.words]
    assert starts == sorted(starts)
    for span in t.segments:  # a word ends before the next one starts, and inside its segment
        assert all(a.end <= b.start for a, b in itertools.pairwise(span.words))
        assert all(span.start <= w.start <= w.end <= span.end + 1e-9 for w in span.words)
    for seg, span in zip(segments, t.segments, strict=True):
        assert span.start == seg.start / RATE
        assert all(span.start - 1e-3 <= w.start <= w.end <= span.end + 1e-3 for w in span.words)
        assert all(0 < w.confidence <= 1 for w in span.words)


def test_one_segment_is_exactly_the_decoded_text() -> None:
    result = SegmentResult(
        token_ids=[1, 6, 2], first_frame=[0, 3, 5], last_frame=[1, 3, 9], probability=[0.9] * 3, frames=12
    )
    t = assemble([Segment(0, np.zeros(12 * 640, np.float32))], [result], DETOK, SHIFT, RATE, 0.48)
    assert t.text == "आप। कैसे"
    assert [(w.word, w.start, w.end) for w in t.words] == [("आप।", 0.0, 0.2), ("कैसे", 0.2, 0.44)]


@settings(max_examples=100, deadline=None)
@given(segment_results())
def test_subtitles_parse_and_respect_their_limits(data: tuple[list[Segment], list[SegmentResult]]) -> None:
    segments, results = data
    duration = (segments[-1].start + segments[-1].samples.shape[0]) / RATE
    t = assemble(segments, results, DETOK, SHIFT, RATE, duration)
    subs = list(srt_lib.parse(render(t, "srt")))
    cues = list(webvtt.from_buffer(io.StringIO(render(t, "vtt"))))
    assert len(subs) == len(cues)
    assert " ".join(s.content.replace("\n", " ") for s in subs).split() == [w.word for w in t.words]
    for sub in subs:
        lines = sub.content.split("\n")
        assert len(lines) <= 2 and all(len(line) <= LINE_CHARS or " " not in line for line in lines)
        length = (sub.end - sub.start).total_seconds()
        assert 0 < length <= MAX_CUE_S + 0.2 or len(sub.content.split()) == 1
    assert all(a.start <= b.start for a, b in itertools.pairwise(subs))


def test_verbose_json_shape() -> None:
    result = SegmentResult(token_ids=[0, 1], first_frame=[0, 4], last_frame=[2, 6], probability=[0.5, 1.0], frames=8)
    t = assemble([Segment(0, np.zeros(8 * 640, np.float32))], [result], DETOK, SHIFT, RATE, 0.32)
    body = openai_verbose(t, "hindi", words=True, segments=True)
    assert body["text"] == "नमस्ते आप" and body["language"] == "hindi" and body["duration"] == 0.32
    (seg,) = body["segments"]
    assert seg["tokens"] == [0, 1] and seg["avg_logprob"] < 0 and seg["start"] == 0.0
    assert [w["word"] for w in body["words"]] == ["नमस्ते", "आप"]


def test_one_duration_everywhere() -> None:
    """A clip of 5.453378684807256 s as sent (44.1 kHz) whose 16-kHz samples last 5.453375 s: the transcript,
    its last segment and OpenAI's verbose JSON all say 5.453."""
    samples = np.zeros(87254, np.float32)  # 5.453375 s at 16 kHz
    result = SegmentResult(token_ids=[1], first_frame=[3], last_frame=[4], probability=[0.9], frames=136)
    t = assemble([Segment(0, samples)], [result], DETOK, SHIFT, RATE, 240494 / 44100)
    assert t.duration_s == t.segments[-1].end == 5.453
    assert openai_verbose(t, "hindi", True, True)["duration"] == 5.453
    assert openai_verbose(t, "hindi", True, True)["segments"][-1]["end"] == 5.453


times = st.floats(0, 20_000, allow_nan=False, allow_infinity=False)
timed_words = st.builds(
    lambda w, a, b, c: TimedWord(w, min(a, b), max(a, b), c),
    st.text(min_size=1, max_size=12),
    times,
    times,
    st.floats(0, 1) | st.integers(0, 1),
)
segment_texts = st.builds(
    lambda a, b, text, words, nsp: SegmentText(min(a, b), max(a, b), text, words, [], 0.0, nsp),
    times,
    times,
    st.text(max_size=30),
    st.lists(timed_words, max_size=6),
    st.none() | st.floats(0, 1) | st.just(1),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(segment_texts, max_size=6),
    st.floats(0, 20_000, allow_nan=False) | st.integers(0, 20_000),
    st.none() | st.floats(0, 20_000, allow_nan=False) | st.integers(0, 5),
    st.booleans(),
)
def test_the_json_answer_is_the_api_types_to_the_byte(
    segments: list[SegmentText], duration: float, speech: float | None, timestamps: bool
) -> None:
    """/transcribe's JSON is built without a model object per word (a long answer's copies); it must be what the
    API's type gives, byte for byte as Starlette encodes it: field order, words and speech_s left out when not
    there, ints turned floats as pydantic turns them."""
    from types import SimpleNamespace
    from typing import Any

    from starlette.responses import JSONResponse

    from service.api.transcribe import transcription, transcription_json

    transcript = Transcript(" ".join(s.text for s in segments), duration, segments, speech)
    served: Any = SimpleNamespace(tag="m:v1", language="hi")
    typed = JSONResponse(transcription(transcript, served, timestamps).model_dump(mode="json")).body
    assert JSONResponse(transcription_json(transcript, served, timestamps)).body == typed
