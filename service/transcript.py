"""Segments' CTC results -> one transcript: text, segment spans, and words with times and confidence.

Word times come from the CTC frames of their tokens: start = first frame x frame shift, end = (last frame
of the last token + 1) x frame shift, both offset by the segment's start and clipped to the segment. Word
confidence is the mean, over the word's tokens, of each token's mean per-frame probability of its own label
across its run of frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from service.recognizer import SegmentResult
from service.segment import Segment
from service.tokens import Detokenizer


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


@dataclass(frozen=True)
class Transcript:
    text: str
    duration_s: float
    segments: list[SegmentText]

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
    words = []
    for group in groups:
        if not group:
            continue
        text = detok.text([result.token_ids[k] for k in group]).strip()
        if not text:
            continue
        start = min(end_s, offset_s + result.first_frame[group[0]] * frame_shift_s)
        end = min(end_s, offset_s + (result.last_frame[group[-1]] + 1) * frame_shift_s)
        confidence = sum(result.probability[k] for k in group) / len(group)
        words.append(TimedWord(text, round(start, 3), round(max(start, end), 3), round(confidence, 4)))
    return words


def assemble(
    segments: Sequence[Segment],
    results: Sequence[SegmentResult],
    detok: Detokenizer,
    frame_shift_s: float,
    rate: int,
    duration_s: float,
) -> Transcript:
    """One segment: the text is exactly NeMo's. Several: each segment's text, stripped, joined by spaces."""
    parts = []
    for seg, res in zip(segments, results, strict=True):
        start, end = seg.start / rate, (seg.start + seg.samples.shape[0]) / rate
        logs = [math.log(max(p, 1e-12)) for p in res.probability]
        parts.append(
            SegmentText(
                start=start,
                end=end,
                text=detok.text(res.token_ids),
                words=segment_words(res, detok, frame_shift_s, start, end),
                token_ids=list(res.token_ids),
                avg_logprob=sum(logs) / len(logs) if logs else 0.0,
            )
        )
    text = parts[0].text if len(parts) == 1 else " ".join(p.text.strip() for p in parts if p.text.strip())
    return Transcript(text=text, duration_s=duration_s, segments=parts)
