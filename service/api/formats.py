"""Transcript -> the output formats: plain text, SRT and WebVTT subtitles, OpenAI's verbose JSON.

Subtitle cues are built from the timed words: a cue ends at a segment boundary, at a silence of more than
`MAX_GAP_S`, or before it would exceed `MAX_CUE_S` seconds or two lines of `LINE_CHARS` characters.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Literal

from service.recognition.transcript import TimedWord, Transcript

LINE_CHARS = 42  # the usual broadcast limit per subtitle line
MAX_LINES = 2
MAX_CUE_S = 6.0
MAX_GAP_S = 1.0

ResponseFormat = Literal["json", "text", "srt", "vtt"]
# The plain-text formats' media types (SubRip has no registered type; application/x-subrip is what players
# and browsers know).
MEDIA_TYPES = {
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def media_type(response_format: str) -> str:
    return MEDIA_TYPES.get(response_format, "text/plain; charset=utf-8")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: list[str]


def cues(transcript: Transcript) -> list[Cue]:
    out: list[Cue] = []
    for segment in transcript.segments:
        current: list[TimedWord] = []
        for word in segment.words:
            if current and _breaks(current, word):
                out.append(_cue(current))
                current = []
            current.append(word)
        if current:
            out.append(_cue(current))
    return out


def _breaks(current: list[TimedWord], word: TimedWord) -> bool:
    text = " ".join(w.word for w in [*current, word])
    too_long = len(_wrap(text)) > MAX_LINES or any(len(line) > LINE_CHARS for line in _wrap(text))
    return too_long or word.end - current[0].start > MAX_CUE_S or word.start - current[-1].end > MAX_GAP_S


def _wrap(text: str) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= LINE_CHARS:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _cue(words: list[TimedWord]) -> Cue:
    end = max(words[-1].end, words[0].start + 0.2)  # a cue needs some visible duration
    return Cue(words[0].start, end, _wrap(" ".join(w.word for w in words)))


def _timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n" + "\n".join(c.lines)
        for i, c in enumerate(cues(transcript), 1)
    ]
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n" + "\n".join(c.lines) for c in cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n\n".join(blocks) + ("\n" if blocks else "")


def openai_verbose(transcript: Transcript, language: str, words: bool, segments: bool) -> dict[str, Any]:
    """OpenAI's verbose_json. Fields we cannot estimate are stated, not invented: no_speech_prob comes from the
    VAD (0.0 without it), temperature is 0.0 (greedy decoding); tokens are the model's own token ids."""
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language,
        "duration": transcript.duration_s,
        "text": transcript.text,
    }
    if segments:
        body["segments"] = [
            {
                "id": i,
                "seek": round(s.start * 100),
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": s.token_ids,
                "temperature": 0.0,
                "avg_logprob": round(s.avg_logprob, 4),
                "compression_ratio": _compression_ratio(s.text),
                "no_speech_prob": s.no_speech_prob if s.no_speech_prob is not None else 0.0,
            }
            for i, s in enumerate(transcript.segments)
        ]
    if words:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
    if transcript.text_spoken is not None:
        body["text_spoken"] = transcript.text_spoken
    return body


def _compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


def render(transcript: Transcript, response_format: str) -> str:
    """The plain-text formats."""
    if response_format == "srt":
        return srt(transcript)
    if response_format == "vtt":
        return vtt(transcript)
    return transcript.text
