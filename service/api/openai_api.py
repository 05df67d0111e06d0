"""OpenAI-compatible routes, mounted at /v1 on the entry service: POST /v1/audio/transcriptions (as OpenAI's
SDKs send it) and GET /v1/models. Same audio handling, limits and pipeline as /transcribe; errors in OpenAI's
error-object shape. A Starlette app because the form field `timestamp_granularities[]` is not a Python name.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from service.api.entry import Entry, current
from service.api.formats import media_type, openai_verbose, render
from service.api.forms import upload_data
from service.api.realtime import serve
from service.api.replies import Scope, error_body
from service.errors import ASRError, BadRequest

FILE_FIELD = "file"
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
OPENAI_FIELDS = frozenset(
    {
        "file",
        "model",
        "language",
        "prompt",
        "response_format",
        "temperature",
        "timestamp_granularities[]",
        "timestamp_granularities",
    }
)
# ISO 639-1 -> the language name OpenAI's verbose_json reports.
LANGUAGE_NAMES = {
    "hi": "hindi",
    "en": "english",
    "mr": "marathi",
    "bn": "bengali",
    "ta": "tamil",
    "te": "telugu",
    "gu": "gujarati",
    "kn": "kannada",
    "ml": "malayalam",
    "pa": "punjabi",
    "ur": "urdu",
    "de": "german",
    "es": "spanish",
    "fr": "french",
    "it": "italian",
    "ru": "russian",
}


async def transcriptions(request: Request) -> Response:
    """The route as mounted; the request guard answers POSTs from the form it parsed (answer_form) before they
    get here."""
    form = await request.form()
    try:
        return await answer_form(request.scope, form)
    finally:
        await form.close()


async def answer_form(scope: Scope, form: Any) -> Response:
    """POST /v1/audio/transcriptions from its parsed form."""
    from starlette.datastructures import State

    entry = current()
    state = State(scope.setdefault("state", {}))
    try:
        upload = form.get(FILE_FIELD)
        if not isinstance(upload, UploadFile):
            raise BadRequest("the field 'file' must be an uploaded audio file", FILE_FIELD)
        options = _options(form, entry)
        data = await upload_data(upload)
        state.asr_model = options["model"].name  # for the request metrics and log line (api/requestlog.py)
        transcript = await entry.files.run(data, options["model"], options["decoding"])
        state.asr_audio_s = transcript.duration_s
        if options["writing"] is not None:
            transcript = await options["writing"].transcript_async(transcript)
    except ASRError as exc:  # (RequestGuard adds Retry-After to 503s)
        return JSONResponse(error_body("openai", int(exc.status), exc.code, exc.message, exc.param), int(exc.status))
    fmt = options["response_format"]
    if fmt == "json":
        return JSONResponse({"text": transcript.text})
    if fmt == "verbose_json":
        code = options["model"].language
        language = LANGUAGE_NAMES.get(code, code)
        grains = options["granularities"]
        return JSONResponse(openai_verbose(transcript, language, "word" in grains, "segment" in grains or not grains))
    return PlainTextResponse(render(transcript, fmt), media_type=media_type(fmt))


def _options(form: Any, entry: Entry) -> dict[str, Any]:
    chosen = entry.policy.model(str(form.get("model") or ""), str(form.get("language") or ""))
    fmt = str(form.get("response_format") or "json")
    if fmt not in FORMATS:
        raise BadRequest(f"response_format must be one of {', '.join(FORMATS)}", "response_format")
    grains = [str(g) for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")]
    if any(g not in GRANULARITIES for g in grains):
        raise BadRequest(f"timestamp_granularities[] takes {' and '.join(GRANULARITIES)}", "timestamp_granularities[]")
    temperature = form.get("temperature")
    if temperature not in (None, ""):
        try:
            float(str(temperature))  # accepted and ignored: no sampling in CTC decoding
        except ValueError:
            raise BadRequest("temperature must be a number", "temperature") from None
    # The prompt is read as hotwords (`phrase[:weight], ...`, as /transcribe's `hotwords`): beam search favours
    # those phrases. Without a prompt, ASR_DECODING decides.
    try:
        decoding = entry.policy.decoding("", str(form.get("prompt") or ""))
    except BadRequest as exc:
        raise BadRequest(f"the prompt is read as hotwords: {exc.message}", "prompt") from None
    # Extra fields (OpenAI has none for it): itn=true|false for the written form, itn_digits=devanagari|latin
    writing = entry.policy.writing(chosen, form_flag(form, "itn"), str(form.get("itn_digits") or ""))
    return {"response_format": fmt, "granularities": grains, "model": chosen, "decoding": decoding, "writing": writing}


def form_flag(form: Any, name: str) -> bool | None:
    """A true/false form field (also 1/0, yes/no); None when absent or empty."""
    value = str(form.get(name) or "").strip().lower()
    if not value:
        return None
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"{name} must be true or false, not {value!r}", name)


def _model_object(m: Any) -> dict[str, Any]:
    return {"id": m.name, "object": "model", "owned_by": "local", **m.describe()}


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [_model_object(m) for m in current().policy.catalog.models]})


async def model(request: Request) -> Response:
    """GET /v1/models/{id}: one served model (its name, `name:latest` or full tag), or OpenAI's 404."""
    name = request.path_params["model_id"]
    catalog = current().policy.catalog
    found = catalog.find(name)
    if found is None:
        message = f"the model {name!r} does not exist; served: {', '.join(catalog.names())}"
        return JSONResponse(error_body("openai", 404, "model_not_found", message, "model"), 404)
    return JSONResponse(_model_object(found))


async def realtime(websocket: WebSocket) -> None:
    """ws /v1/realtime?intent=transcription: streaming transcription sessions (service/api/realtime.py)."""
    entry = current()
    await serve(websocket, entry.streams, entry.policy, entry.realtime_limits)


openai_app = Starlette(
    routes=[
        Route("/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/models", models, methods=["GET"]),
        Route("/models/{model_id:path}", model, methods=["GET"]),
        WebSocketRoute("/realtime", realtime),
    ]
)
