"""The OpenAPI document served at /docs.json (and packed into the bento as apis/openapi.yaml), written from
what the service really answers: every route (BentoML's and the mounted /v1 app), every status with its error
shape, JSON and text answers, nullable fields as nullable.

BentoML 1.4.39's own generator cannot describe an API typed `Transcription | str` (it reads the union's
component reference with a `#/$defs/` prefix and raises KeyError, which also broke `bentoml build`), leaves
out mounted Starlette apps, and lists only its own 400/404/500 bodies. `install(svc)` gives the entry service
this generator instead (a subclass overriding the `openapi_spec` property; nothing of BentoML is patched).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service import __version__
from service.api.formats import MEDIA_TYPES
from service.api.schemas import (
    ErrorBody,
    ModelList,
    ModelObject,
    OpenAIError,
    OpenAITranscription,
    OpenAIVerboseTranscription,
    Transcription,
)

OPENAPI_VERSION = "3.1.0"  # JSON Schema 2020-12 schemas (pydantic's), shown by BentoML's Swagger UI 5
REF = "#/components/schemas/{model}"
TITLE = "NeMo CTC speech recognition"
DESCRIPTION = """Speech to text with an NVIDIA NeMo CTC model exported to ONNX, batched across requests.

* `POST /transcribe`: multipart field `audio`; JSON (`Transcription`), or text, SRT or WebVTT.
* `POST /v1/audio/transcriptions`, `GET /v1/models`, `GET /v1/models/{model_id}`: OpenAI's API (its SDKs work).
* WebSocket `/v1/realtime?intent=transcription`: streaming transcription, OpenAI's Realtime transcription
  session (not an HTTP route, so not described below; the README has its events).
* `POST /status`, `GET /readyz`, `GET /livez`, `GET /metrics` (Prometheus) for operators.

Every error is JSON with a stable code: `{"error": code, "message": text}`, or OpenAI's error object on `/v1`.
A 429 or a 503 that may clear by itself carries `Retry-After`."""

# Which error codes each status carries (the `error` / `error.code` field), for the descriptions.
ERRORS = {
    400: "bad_request, empty_audio, undecodable_audio, unknown_model, unknown_language, itn_unsupported: the "
    "request or its audio",
    404: "model_not_found: no served model has that name",
    413: "upload_too_large, audio_too_long, audio_too_large: over ASR_MAX_UPLOAD_MB, ASR_MAX_DURATION_S or "
    "ASR_MAX_DECODED_MB",
    415: "unsupported_format: not audio, or a container the service does not take",
    422: "audio_too_short, unprocessable: under ASR_MIN_DURATION_S, or a field of the wrong type",
    429: "too_many_requests: ASR_MAX_CONCURRENCY requests in flight (Retry-After: 1)",
    503: "not_ready, overloaded, unavailable: the model is not loaded, its queue is full, or the recognizer is down",
    504: "timeout: not transcribed within ASR_TIMEOUT_S",
    401: "unauthorized (invalid_api_key on /v1): no API key, or not one in force (WWW-Authenticate: Bearer)",
}
TRANSCRIBE_ERRORS = (400, 413, 415, 422, 429, 503, 504)
TEXT_FORMATS = ("text", "srt", "vtt")


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(model: type[BaseModel], statuses: tuple[int, ...]) -> dict[str, Any]:
    return {str(s): _json(_ref(model), ERRORS[s]) for s in statuses}


def _text_answers() -> dict[str, Any]:
    return {
        MEDIA_TYPES[f].split(";")[0]: {"schema": {"type": "string", "description": f"response_format={f}"}}
        for f in TEXT_FORMATS
    }


def _components() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        Transcription,
        ErrorBody,
        OpenAIError,
        OpenAITranscription,
        OpenAIVerboseTranscription,
        ModelObject,
        ModelList,
    ]
    _, schema = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    return dict(schema.get("$defs", {}))


def _transcribe(svc: Any) -> dict[str, Any]:
    from bentoml._internal.utils.cattr import bentoml_cattr

    api = svc.apis["transcribe"]
    ok = {
        "description": "The transcript: JSON by default (`words` only with timestamps=true), or plain text, "
        "SRT or WebVTT as response_format asks. BentoML's Python clients get the text formats as a str.",
        "content": {"application/json": {"schema": _ref(Transcription)}, **_text_answers()},
    }
    return {
        "post": {
            "tags": ["Transcription"],
            "operationId": "transcribe",
            "summary": "Transcribe one audio file",
            "description": api.doc or "",
            "requestBody": bentoml_cattr.unstructure(api.openapi_request()),
            "responses": {"200": ok, **_errors(ErrorBody, TRANSCRIBE_ERRORS)},
        }
    }


def _openai_transcriptions() -> dict[str, Any]:
    fields = {
        "file": {"type": "string", "format": "binary", "description": "the audio file"},
        "model": {"type": "string", "description": "a served model's name (GET /v1/models); empty: the default"},
        "language": {"type": "string", "description": "ISO 639-1; chooses among the served models"},
        "prompt": {
            "type": "string",
            "description": "read as hotwords: `phrase[:weight], ...` favoured by beam search (see /transcribe)",
        },
        "response_format": {"type": "string", "enum": ["json", "text", "srt", "vtt", "verbose_json"]},
        "temperature": {"type": "number", "description": "accepted and ignored: CTC decoding does not sample"},
        "timestamp_granularities[]": {
            "type": "array",
            "items": {"type": "string", "enum": ["word", "segment"]},
            "description": "with verbose_json: word and/or segment (segment when none)",
        },
        "itn": {
            "type": "boolean",
            "description": "ours: the written form (numbers, dates, money, times as digits and symbols); "
            "verbose_json then adds text_spoken; default: the server's ASR_ITN",
        },
        "itn_digits": {"type": "string", "enum": ["devanagari", "latin"], "description": "ours: digits of it"},
    }
    body = {"type": "object", "required": ["file"], "properties": fields}
    ok = {
        "description": "json: `{text}`; verbose_json: with language, duration, segments and words; or text, "
        "SRT, WebVTT.",
        "content": {
            "application/json": {"schema": {"anyOf": [_ref(OpenAITranscription), _ref(OpenAIVerboseTranscription)]}},
            **_text_answers(),
        },
    }
    return {
        "post": {
            "tags": ["OpenAI-compatible"],
            "operationId": "createTranscription",
            "summary": "OpenAI's transcription endpoint (unknown form fields are ignored, as OpenAI's SDKs may send "
            "newer ones)",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}},
            "responses": {"200": ok, **_errors(OpenAIError, TRANSCRIBE_ERRORS)},
        }
    }


def _openai_models() -> dict[str, Any]:
    one = {
        "get": {
            "tags": ["OpenAI-compatible"],
            "operationId": "retrieveModel",
            "summary": "One served model by name, name:latest or full store tag",
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref(ModelObject), "the model"), **_errors(OpenAIError, (404,))},
        }
    }
    every = {
        "get": {
            "tags": ["OpenAI-compatible"],
            "operationId": "listModels",
            "summary": "The served models; the first is the default",
            "responses": {"200": _json(_ref(ModelList), "the served models")},
        }
    }
    return {"/v1/models": every, "/v1/models/{model_id}": one}


def _operations() -> dict[str, Any]:
    status_schema = {
        "type": "object",
        "required": ["model", "language", "ready", "reason", "providers", "models"],
        "properties": {
            "model": {"type": "string", "description": "the default model's store tag"},
            "language": {"type": "string"},
            "ready": {"type": "boolean"},
            "reason": {"type": "string", "description": "why not ready (empty when ready)"},
            "permanent": {"type": "boolean", "description": "true when waiting will not make it ready"},
            "providers": {"type": "array", "items": {"type": "string"}},
            "models": {"type": "array", "items": {"type": "object"}, "description": "each served model"},
            "patches": {
                "type": "array",
                "description": "each change to BentoML's internals: applied, or skipped (the installed BentoML's "
                "code is not what it was written for) with the reason and what the service does without it",
                "items": {
                    "type": "object",
                    "required": ["name", "status"],
                    "properties": {
                        "name": {"type": "string"},
                        "status": {"type": "string", "enum": ["applied", "skipped"]},
                        "lost": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    }
    probe = {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "/status": {
            "post": {
                "tags": ["Operations"],
                "operationId": "status",
                "summary": "The served models, their providers and readiness with its reason",
                "responses": {"200": _json(status_schema, "always 200, ready or not")},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["Operations"],
                "summary": "Ready to transcribe: the models are loaded (queue depth does not matter)",
                "responses": {
                    "200": probe,
                    "503": _json(
                        _ref(ErrorBody),
                        "not_ready with the reason /status gives; Retry-After: 1 "
                        "unless the cause cannot clear by itself (e.g. a GPU demanded and absent)",
                    ),
                },
            }
        },
        "/livez": {"get": {"tags": ["Operations"], "summary": "The process answers", "responses": {"200": probe}}},
        "/healthz": {
            "get": {"tags": ["Operations"], "summary": "Same as /livez (deprecated)", "responses": {"200": probe}}
        },
        "/metrics": {
            "get": {
                "tags": ["Operations"],
                "summary": "Prometheus metrics: asr_* (by model, route, status, error code) and BentoML's",
                "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {}}}},
            }
        },
    }


class Document(dict[str, Any]):
    """The document as a dict, with the `asdict()` BentoML's /docs.json view calls."""

    def asdict(self) -> dict[str, Any]:
        return dict(self)


def secure(paths: dict[str, Any], open_paths: frozenset[str]) -> None:
    """Each operation outside `open_paths` needs the bearer key and may answer 401 (in its route's error shape)."""
    for path, operations in paths.items():
        if path in open_paths:
            continue
        model = OpenAIError if path.startswith("/v1/") else ErrorBody
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            operation["responses"] = {**operation["responses"], **_errors(model, (401,))}


def document(svc: Any, secured: bool = False, open_paths: frozenset[str] = frozenset()) -> Document:
    description = DESCRIPTION
    if getattr(svc, "bento", None) is not None:
        description += f"\n\nBento `{svc.bento.tag}`."
    if secured:
        description += (
            "\n\nAPI keys are required: `Authorization: Bearer <key>` (WebSocket: the header, or the subprotocol "
            "`openai-insecure-api-key.<key>`). Open without one: " + ", ".join(sorted(open_paths)) + "."
        )
    paths = {
        "/transcribe": _transcribe(svc),
        "/v1/audio/transcriptions": _openai_transcriptions(),
        **_openai_models(),
        **_operations(),
    }
    components: dict[str, Any] = {"schemas": _components()}
    if secured:
        secure(paths, open_paths)
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API key of the service"}
        }
    return Document(
        openapi=OPENAPI_VERSION,
        info={"title": TITLE, "version": __version__, "description": description},
        servers=[{"url": "."}],
        tags=[
            {"name": "Transcription"},
            {"name": "OpenAI-compatible", "description": "the same pipeline in OpenAI's request and error shapes"},
            {"name": "Operations"},
        ],
        paths=paths,
        components=components,
    )


def install(svc: Any, secured: bool = False, open_paths: frozenset[str] = frozenset()) -> None:
    """Serve `document(svc)` as this service's OpenAPI document (at /docs.json and in built bentos); `secured`:
    API keys are required (outside `open_paths`)."""
    import yaml

    class Documented(type(svc)):  # type: ignore[misc]
        __slots__ = ()

        @property
        def openapi_spec(self) -> Document:
            return document(self, secured, open_paths)

    yaml.add_representer(Document, lambda dumper, doc: dumper.represent_dict(dict(doc)))
    svc.__class__ = Documented
