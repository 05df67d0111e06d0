"""Segments' CTC results -> one transcript: text, segment spans, and words with times and confidence.

Word times come from the CTC frames of their tokens: start = first frame x frame shift, end = (last frame
of the last token + 1 + END_PAD_FRAMES) x frame shift, never past the next word's start; both offset by the
segment's start and clipped to the segment. Word confidence is the mean, over the word's tokens, of each
token's mean per-frame probability of its own label across its run of frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from service.audio.segment import Segment
from service.recognition.beam import BeamText
from service.recognition.recognizer import SegmentResult
from service.recognition.tokens import Detokenizer

# CTC emits a character at a peak of one or two frames, and the sound of a word's last character goes on past
# it: a word ends one frame after its last token's frames (how that was chosen: docs/accuracy.md, "Word times").
END_PAD_FRAMES = 1


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class SegmentText:
    start: float  # seconds (full precision: start sample / rate)
    end: float
    text: str  # this segment's text exactly as NeMo decodes its tokens
    words: list[TimedWord]
    token_ids: list[int]
    avg_logprob: float  # mean log of the tokens' probabilities (0 without tokens)
    no_speech_prob: float | None = None  # from the VAD (None: not estimated)


@dataclass(frozen=True)
class Transcript:
    text: str
    duration_s: float
    segments: list[SegmentText]
    speech_s: float | None = None  # seconds of speech the VAD found (None: not estimated)
    text_spoken: str | None = None  # the text as recognised, when `text` is its written form (ITN)

    @property
    def words(self) -> list[TimedWord]:
        return [w for s in self.segments for w in s.words]


def segment_words(
    result: SegmentResult, detok: Detokenizer, frame_shift_s: float, offset_s: float, end_s: float
) -> list[TimedWord]:
    """Group a segment's tokens into words (a word starts at a word-marker piece or after a space)."""
    groups: list[list[int]] = []
    for k, token in enumerate(result.token_ids):
        if detok.spec.kind == "characters" and detok.vocabulary[token].isspace():
            groups.append([])  # the space ends the word; the next character starts one
            continue
        if not groups or detok.starts_word(token, first=k == 0):
            groups.append([])
        groups[-1].append(k)
    spans = []
    for group in groups:
        if not group:
            continue
        text = detok.text([result.token_ids[k] for k in group]).strip()
        if text:
            spans.append((text, group))
    words = []
    for i, (text, group) in enumerate(spans):
        start = min(end_s, offset_s + result.first_frame[group[0]] * frame_shift_s)
        end = offset_s + (result.last_frame[group[-1]] + 1 + END_PAD_FRAMES) * frame_shift_s
        if i + 1 < len(spans):  # never into the next word
            end = min(end, offset_s + result.first_frame[spans[i + 1][1][0]] * frame_shift_s)
        end = min(end_s, end)
        confidence = sum(result.probability[k] for k in group) / len(group)
        words.append(TimedWord(text, round(start, 3), round(max(start, end), 3), round(confidence, 4)))
    return words


def beam_words(result: BeamText, frame_shift_s: float, offset_s: float, end_s: float) -> list[TimedWord]:
    """A beam's words, timed by the same rule as greedy's (the beam reports each word's first frame and the
    frame after its last token)."""
    words = []
    for i, w in enumerate(result.words):
        start = min(end_s, offset_s + w.first_frame * frame_shift_s)
        end = offset_s + (w.end_frame + END_PAD_FRAMES) * frame_shift_s
        if i + 1 < len(result.words):
            end = min(end, offset_s + result.words[i + 1].first_frame * frame_shift_s)
        end = min(end_s, end)
        words.append(TimedWord(w.word, round(start, 3), round(max(start, end), 3), w.confidence))
    return words


def timed_words(
    result: SegmentResult | BeamText, detok: Detokenizer, frame_shift_s: float, offset_s: float, end_s: float
) -> list[TimedWord]:
    """A segment's words, greedy or beam search's, timed in the whole audio (the segment starts at `offset_s`)."""
    if isinstance(result, BeamText):
        return beam_words(result, frame_shift_s, offset_s, end_s)
    return segment_words(result, detok, frame_shift_s, offset_s, end_s)


def assemble(
    segments: Sequence[Segment],
    results: Sequence[SegmentResult | BeamText],
    detok: Detokenizer,
    frame_shift_s: float,
    rate: int,
    duration_s: float,
    total: int | None = None,
    speech_s: float | None = None,
) -> Transcript:
    """One segment: the text is exactly NeMo's (greedy). Several: each segment's text, stripped, joined by spaces.
    Every time is in milliseconds' precision and within one duration: the audio's as sent, rounded to the ms
    (resampling can make the model-rate length differ from it in the sixth decimal), and a segment that ends
    where the audio's `total` samples do ends at that duration (without `total`: the last segment)."""
    duration_s = round(duration_s, 3)
    parts = []
    for seg, res in zip(segments, results, strict=True):
        start = min(duration_s, round(seg.start / rate, 3))
        stop = seg.start + seg.samples.shape[0]
        end = min(duration_s, round(stop / rate, 3))
        reaches_end = (stop == total) if total is not None else (seg is segments[-1])
        if reaches_end:
            end = duration_s
        words = timed_words(res, detok, frame_shift_s, start, end)
        if isinstance(res, BeamText):  # beam search: its words' confidences, no token ids
            text, token_ids = res.text, []
            logs = [math.log(max(w.confidence, 1e-12)) for w in words]
        else:
            text, token_ids = detok.text(res.token_ids), res.token_ids
            logs = [math.log(max(p, 1e-12)) for p in res.probability]
        parts.append(
            SegmentText(
                start=start,
                end=end,
                text=text,
                words=words,
                token_ids=list(token_ids),
                avg_logprob=sum(logs) / len(logs) if logs else 0.0,
                no_speech_prob=seg.no_speech_prob,
            )
        )
    text = parts[0].text if len(parts) == 1 else " ".join(p.text.strip() for p in parts if p.text.strip())
    return Transcript(text=text, duration_s=duration_s, segments=parts, speech_s=speech_s)
