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
    no_speech_prob: float | None = Field(
        default=None,
        description="1 - the highest speech probability the VAD gave any 32 ms of the segment (absent with "
        "ASR_SEGMENTER=energy)",
    )

    @model_serializer(mode="wrap")
    def _leave_out_unknown(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "no_speech_prob")


class Transcription(BaseModel):
    """The JSON answer. `words` is left out unless asked for (timestamps=true), never `null`: BentoML's clients
    read the schema's array type and failed on a null."""

    text: str
    duration_s: float = Field(description="duration of the audio as sent")
    model: str = Field(description="store tag of the model that transcribed it")
    language: str
    segments: list[SegmentSpan] = Field(
        description="the pieces the audio was transcribed in: one, unless it was longer than a segment; with "
        "the VAD, stretches without speech between them were not transcribed"
    )
    words: list[Word] | None = Field(default=None, description="only when timestamps=true (absent otherwise)")
    speech_s: float | None = Field(
        default=None, description="seconds of speech the VAD found in the audio (absent with ASR_SEGMENTER=energy)"
    )
    text_spoken: str | None = Field(
        default=None,
        description="with itn: the text as recognised (spoken form); `text`, segments and words are then in "
        "written form (absent without itn)",
    )

    @model_serializer(mode="wrap")
    def _leave_out_words_not_asked_for(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "words", "speech_s", "text_spoken")


def _without_none(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """Optional fields are left out, never `null`: BentoML's clients read the schema's type and fail on a null."""
    for name in names:
        if data.get(name) is None:
            data.pop(name, None)
    return data


class ErrorBody(BaseModel):
    """Every error of /transcribe, /status and the probes."""

    error: str = Field(description="stable code, e.g. unsupported_format, audio_too_long, overloaded, not_ready")
    message: str = Field(description="what went wrong, for a person")


class OpenAIErrorObject(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error (4xx) or server_error (5xx)")
    param: str | None = Field(description="the form field at fault, when one is")
    code: str = Field(description="the same stable codes as ErrorBody.error")


class OpenAIError(BaseModel):
    """Every error of the /v1 routes, in OpenAI's shape."""

    error: OpenAIErrorObject


class OpenAITranscription(BaseModel):
    """response_format=json on /v1/audio/transcriptions."""

    text: str


class OpenAISegment(BaseModel):
    id: int
    seek: int = Field(description="start in hundredths of a second")
    start: float
    end: float
    text: str
    tokens: list[int] = Field(description="the model's own token ids")
    temperature: float = Field(description="always 0.0: decoding is greedy")
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float = Field(
        description="1 - the highest speech probability the VAD gave any 32 ms of the segment (0.0, not "
        "estimated, with ASR_SEGMENTER=energy)"
    )


class OpenAIWord(BaseModel):
    word: str
    start: float
    end: float


class OpenAIVerboseTranscription(BaseModel):
    """response_format=verbose_json: segments unless only word granularity was asked for, words when it was."""

    task: str = Field(description="always transcribe")
    language: str = Field(description="the language's English name, e.g. hindi")
    duration: float = Field(description="seconds, the same value as duration_s on /transcribe")
    text: str
    segments: list[OpenAISegment] | None = Field(default=None, description="absent when not asked for")
    words: list[OpenAIWord] | None = Field(default=None, description="only with timestamp_granularities[]=word")
    text_spoken: str | None = Field(
        default=None, description="with itn=true: the text as recognised; `text` is in written form"
    )


class ModelObject(BaseModel):
    """One served model, as GET /v1/models lists it."""

    id: str = Field(description="the name to pass as `model`")
    object: str = Field(description="always model")
    owned_by: str
    name: str
    tag: str = Field(description="the BentoML store tag")
    language: str = Field(description="ISO 639-1")
    sample_rate: int
    created: int = Field(description="registration time, Unix seconds")
    demo: bool | None = Field(default=None, description="present (true) for a demonstration model")
    notice: str | None = Field(default=None, description="what a demonstration model is not")


class ModelList(BaseModel):
    object: str = Field(description="always list")
    data: list[ModelObject]
