"""The /transcribe door: its fields, and its answers (JSON `Transcription`, or text, SRT or WebVTT) in the
encoding each kind of caller reads. The route itself is BentoML's typed API (service/service.py), so that
BentoML's clients and its OpenAPI request schema know it; uploads are answered from the form the request guard
parsed (`answer_form`)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import Headers, State
from starlette.responses import JSONResponse, PlainTextResponse, Response

from service.api.entry import Entry, current
from service.api.formats import ResponseFormat, media_type, render
from service.api.forms import upload_data
from service.api.replies import BENTOML_INTERNAL, Scope, error_body
from service.api.schemas import SegmentSpan, Transcription, Word
from service.audio.decode import Upload
from service.catalog import ServedModel
from service.errors import ASRError
from service.pipeline.files import FileTranscription
from service.recognition.transcript import Transcript

FILE_FIELD = "audio"
BENTOML_CLIENT = "BentoML HTTP Client/"  # how BentoML's SyncHTTPClient, AsyncHTTPClient and proxies say who they are


class TranscribeFields(BaseModel):
    """/transcribe's fields besides the file (the BentoML API's signature declares the same, for BentoML)."""

    model_config = ConfigDict(extra="ignore")

    timestamps: bool = False
    response_format: ResponseFormat = "json"
    model: str = ""
    language: str = ""
    decoding: Literal["default", "greedy", "beam"] = "default"
    hotwords: str = ""
    itn: bool | None = None  # None: the server's ASR_ITN
    itn_digits: Literal["default", "devanagari", "latin"] = "default"


FIELDS = frozenset({FILE_FIELD, *TranscribeFields.model_fields})


def caller(ctx: Any) -> tuple[Any, str, str]:
    """BentoML's request context -> the request's state, its media type (a parent service that depends on this
    one by import sends its arguments pickled) and its User-Agent (BentoML's clients and proxies say who they
    are). No context (called in process): a state of its own."""
    if ctx is None:
        return SimpleNamespace(), "", ""
    headers = ctx.request.headers
    return ctx.request.state, str(headers.get("content-type", "")), str(headers.get("user-agent", ""))


async def read_fields(form: Any) -> TranscribeFields | Response:
    """The form's fields besides the file, as BentoML reads a form (a field's last value, JSON-decoded when it is
    JSON), checked; or the 400 that says what is wrong."""
    fields: dict[str, Any] = {}
    for key in form:
        if key != FILE_FIELD:
            value = form[key]
            value = (await value.read()).decode("utf-8", "replace") if not isinstance(value, str) else value
            try:
                fields[key] = json.loads(value)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes: the text
                fields[key] = value
    try:
        return TranscribeFields.model_validate(fields)
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        param = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None
        return JSONResponse(error_body("asr", 400, "bad_request", problems, param), 400)


async def answer_form(scope: Scope, form: Any) -> Response:
    """POST /transcribe from the form the request guard parsed: parsed once (a large upload waits in a temporary
    file). The same fields, checks and answers as the BentoML API."""
    options = await read_fields(form)
    if isinstance(options, Response):
        return options
    data = await upload_data(form[FILE_FIELD])
    headers = Headers(scope=scope)
    state = State(scope.setdefault("state", {}))
    answer = await transcribe(
        current(), data, options, state, headers.get("content-type", ""), headers.get("user-agent", "")
    )
    assert isinstance(answer, Response)  # a pickled request never comes this way
    return answer


async def transcribe(
    entry: Entry,
    data: Upload,
    options: TranscribeFields,
    state: Any,
    media: str,
    agent: str,
    files: FileTranscription | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Response | Transcription:
    """An upload (its bytes, or a file the decoding closes) and the request's options -> the answer (a
    Transcription itself for a parent service that sent pickled arguments). `state`: the request's, where the model
    and the audio's length are left for the request's metrics and log line (service/api/requestlog.py). `files`:
    the pipeline (default: the entry's, with the interactive limits; jobs have their own); `progress(segments done,
    segments)` as they are recognised."""
    try:
        served = entry.policy.model(options.model, options.language)
        decoding = entry.policy.decoding(options.decoding, options.hotwords)
        writing = entry.policy.writing(served, options.itn, options.itn_digits)
        state.asr_model = served.name
        transcript = await (files or entry.files).run(data, served, decoding, progress)
        state.asr_audio_s = transcript.duration_s
        if writing is not None:
            transcript = await writing.transcript_async(transcript)
    except ASRError as exc:  # (the request guard adds Retry-After to 503s)
        return JSONResponse(exc.body(), status_code=int(exc.status))
    if options.response_format != "json":
        text = render(transcript, options.response_format)
        # BentoML's clients and proxies decode every answer as the API's declared type (JSON, or a pickle for
        # a parent service that depends on this one by import), never as plain text (a text body raised
        # JSONDecodeError); BentoML itself would send a str raw. They get the str in their own encoding.
        if media.startswith(BENTOML_INTERNAL):
            return Response(pickle.dumps(text), media_type=BENTOML_INTERNAL)
        if agent.startswith(BENTOML_CLIENT):
            return JSONResponse(text)
        return PlainTextResponse(text, media_type=media_type(options.response_format))
    if media.startswith(BENTOML_INTERNAL):
        return transcription(transcript, served, options.timestamps)  # BentoML pickles it for the parent service
    # BentoML's JSON for a union-typed answer escapes every non-ASCII character (json.dumps): UTF-8 here
    return JSONResponse(transcription_json(transcript, served, options.timestamps))


def transcription(transcript: Transcript, served: ServedModel, timestamps: bool) -> Transcription:
    """The answer as the API's type."""
    return Transcription(
        text=transcript.text,
        duration_s=round(transcript.duration_s, 3),
        model=served.tag,
        language=served.language,
        segments=[
            SegmentSpan(start=s.start, end=s.end, text=s.text, no_speech_prob=s.no_speech_prob)
            for s in transcript.segments
        ],
        words=[Word(**vars(w)) for w in transcript.words] if timestamps else None,
        speech_s=transcript.speech_s,
        text_spoken=transcript.text_spoken,
    )


def transcription_json(transcript: Transcript, served: ServedModel, timestamps: bool) -> dict[str, Any]:
    """transcription(...).model_dump(mode="json"), field for field, built without a model object and a dict per
    word: three hours hold ~27,000 words, and those copies were most of what a long request's answer cost."""
    segments: list[dict[str, Any]] = []
    for s in transcript.segments:
        span: dict[str, Any] = {"start": float(s.start), "end": float(s.end), "text": s.text}
        if s.no_speech_prob is not None:
            span["no_speech_prob"] = float(s.no_speech_prob)
        segments.append(span)
    body: dict[str, Any] = {
        "text": transcript.text,
        "duration_s": round(float(transcript.duration_s), 3),
        "model": served.tag,
        "language": served.language,
        "segments": segments,
    }
    if timestamps:
        body["words"] = [
            {"word": w.word, "start": float(w.start), "end": float(w.end), "confidence": float(w.confidence)}
            for w in transcript.words
        ]
    if transcript.speech_s is not None:
        body["speech_s"] = float(transcript.speech_s)
    if transcript.text_spoken is not None:
        body["text_spoken"] = transcript.text_spoken
    return body
