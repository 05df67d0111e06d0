"""The public response types (they are the OpenAPI schema of the API)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer


class Word(BaseModel):
    word: str
    start: float = Field(description="seconds from the start of the audio")
    end: float = Field(description="seconds from the start of the audio")
    confidence: float = Field(description="mean per-frame probability of the word's tokens, 0..1")


class SegmentSpan(BaseModel):
    start: float = Field(description="seconds from the start of the audio")
    end: float = Field(description="seconds from the start of the audio")
    text: str = Field(description="this segment's own transcript")


class Transcription(BaseModel):
    """The JSON answer. `words` is left out unless asked for (timestamps=true), never `null`: BentoML's clients
    read the schema's array type and failed on a null."""

    text: str
    duration_s: float = Field(description="duration of the audio as sent")
    model: str = Field(description="store tag of the model that transcribed it")
    language: str
    segments: list[SegmentSpan] = Field(
        description="the pieces the audio was transcribed in: one, unless it was longer than a segment"
    )
    words: list[Word] | None = Field(default=None, description="only when timestamps=true (absent otherwise)")

    @model_serializer(mode="wrap")
    def _leave_out_words_not_asked_for(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("words") is None:
            data.pop("words", None)
        return data
