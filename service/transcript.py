"""Segments' CTC results -> one transcript: text, and words with times and confidence.

Word times come from the CTC frames of their tokens: start = first frame x frame shift, end = (last frame
of the last token + 1) x frame shift, both offset by the segment's start. Word confidence is the mean, over
the word's tokens, of each token's mean per-frame probability of its own label across its run of frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.recognizer import SegmentResult
from service.tokens import Detokenizer


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float
    end: float
    confidence: float


def segment_words(
    result: SegmentResult, detok: Detokenizer, frame_shift_s: float, offset_s: float, audio_end_s: float
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
        start = offset_s + result.first_frame[group[0]] * frame_shift_s
        end = min(audio_end_s, offset_s + (result.last_frame[group[-1]] + 1) * frame_shift_s)
        confidence = sum(result.probability[k] for k in group) / len(group)
        words.append(TimedWord(text, round(start, 3), round(max(start, end), 3), round(confidence, 4)))
    return words


def join_text(results: Sequence[SegmentResult], detok: Detokenizer) -> str:
    """One segment: exactly NeMo's text. Several: each segment's text, joined by single spaces."""
    texts = [detok.text(r.token_ids) for r in results]
    if len(texts) == 1:
        return texts[0]
    return " ".join(t.strip() for t in texts if t.strip())
