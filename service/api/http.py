"""ASGI middleware in front of the BentoML app: the parts of the error contract BentoML does not give us.

- Uploads over the size limit get 413 while the body arrives (Content-Length first, then counted bytes),
  before BentoML buffers anything (BentoML 1.4 has no body limit).
- The multipart form is parsed here, once: a missing or misnamed field is a 400 (BentoML answers 500, notes
  §3.1), and a file field holding a string is refused (BentoML would download it as URL). The transcription
  routes are answered from this parsed form (FORM_HANDLERS): nothing parses it again, and the upload is never
  written to a temporary file (BentoML writes one for a `Path` argument).
- The concurrency limit (429 at once) and the request timeout (504) of the API routes are enforced here:
  BentoML adds user middlewares inside its own traffic middlewares, whose bodies we could not reshape.
  BentoML's own limits stay configured, looser, as a backstop.
- Every error response has one shape, {"error": code, "message": text}: BentoML's own 400 (validation)
  and 503 bodies are rewritten, and 4xx arrays (BentoML issue 4232) become objects. Every 503 carries
  Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from service.errors import STATUS_CODES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


BENTOML_INTERNAL = "application/vnd.bentoml+pickle"


@dataclass
class Readiness:
    """Why the entry last found the service not ready (it updates this; /readyz answers with it)."""

    reason: str = "the service is starting"
    permanent: bool = False  # True when the cause cannot clear by itself (no Retry-After then)


READINESS = Readiness()


@dataclass(frozen=True)
class FormRoute:
    file_field: str  # the one file field
    fields: frozenset[str] = field(default_factory=frozenset)  # every accepted field, the file's included
    style: str = "asr"  # error bodies: "asr" {"error": code, "message": text}, or "openai" (OpenAI's shape)
    allow_unknown: bool = False  # ignore fields not in `fields` (OpenAI clients may send newer options)


def error_body(style: str, status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    if style == "openai":
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return {"error": code, "message": message}


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def error_code(body: bytes, status: int) -> str:
    """The code in one of our error bodies (either shape); the status's code when it cannot be read."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("code"), str):
            return str(inner["code"])
        if isinstance(inner, str) and "message" in data:
            return inner
    return STATUS_CODES.get(status, "error")


def reshape_error(status: int, body: bytes, style: str = "asr") -> dict[str, Any] | None:
    """BentoML's error body -> ours (in the route's style); None when it already has that shape."""
    try:
        data: Any = json.loads(body or b"null")
    except ValueError:
        data = body.decode("utf-8", "replace").strip()
    if isinstance(data, dict) and set(data) == {"error", "message"}:
        return None if style == "asr" else error_body(style, status, str(data["error"]), str(data["message"]))
    if isinstance(data, dict) and isinstance(data.get("error"), dict):  # already OpenAI's shape
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):  # BentoML 4xx: [{"error": ...}]
        data = data[0]
    message = data.get("error", "") if isinstance(data, dict) else str(data or "")
    if isinstance(data, dict) and isinstance(data.get("detail"), list):
        details = [f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}" for d in data["detail"]]
        message = "; ".join(d.strip(": ") for d in details) or message
    if status >= 500 and status not in (503, 504):
        message = "internal error; the server log has the details"
    return error_body(style, status, STATUS_CODES.get(status, "error"), str(message)[:500] or "request failed")


REQUEST_LOG = logging.getLogger("asr.request")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
PROBES = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})


@dataclass
class RequestRecord:
    """One request's log line: `<request id> <method> <path> <status> <code> model=... audio_s=... <ms> ms
    client=...`. The id is the client's X-Request-ID when it sends a usable one (up to 128 of A-Z a-z 0-9 and
    ._:@/+=-), else a new one; the answer carries it back. Probes are logged only when they fail."""

    id: str
    method: str
    path: str
    client: str
    started: float
    status: int | None = None
    code: str = ""
    model: str = ""
    audio_s: float | None = None
    done: bool = False

    @classmethod
    def start(cls, scope: Scope) -> RequestRecord:
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"x-request-id"), "")
        client = scope.get("client") or ("", 0)
        return cls(
            id=given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex,
            method=str(scope.get("method", "")),
            path=str(scope.get("path", "")),
            client=str(client[0]),
            started=time.perf_counter(),
        )

    def log(self) -> None:
        if self.path in PROBES and self.status == 200:
            return
        took_ms = (time.perf_counter() - self.started) * 1000
        status = str(self.status) if self.done else "-"
        code = self.code if self.done else "client_gone"  # the client left before the whole answer was sent
        audio = f" audio_s={self.audio_s:.2f}" if isinstance(self.audio_s, float) else ""
        model = f" model={self.model}" if self.model else ""
        REQUEST_LOG.info(
            "%s %s %s %s %s%s%s %.0f ms client=%s",
            self.id, self.method, self.path, status, code, model, audio, took_ms, self.client,
        )  # fmt: skip


class RequestGuard:
    def __init__(
        self, app: ASGIApp, max_body: int, routes: dict[str, FormRoute], max_concurrency: int, timeout_s: float
    ) -> None:
        self.app, self.max_body, self.routes = app, max_body, routes
        self.max_concurrency, self.timeout_s = max_concurrency, timeout_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.routes.get(scope["path"])
        style = route.style if route else "asr"
        record = RequestRecord.start(scope)
        send = self._recording(send, scope, record, counted=route is not None and scope["method"] == "POST")
        send = self._shaping(send, style, readiness=scope["path"] == "/readyz")
        try:
            await self._route(scope, receive, send, route, style)
        finally:
            record.log()

    async def _route(self, scope: Scope, receive: Receive, send: Send, route: FormRoute | None, style: str) -> None:
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            message = f"more than {self.max_concurrency} requests in flight; retry shortly"
            body = error_body(style, 429, "too_many_requests", message)
            await send_json(send, 429, body, {"retry-after": "1"})
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        self.in_flight += 1
        try:
            with anyio.fail_after(self.timeout_s):
                await self._guarded(scope, receive, tracking_send, route)
        except TimeoutError:
            if not started:
                message = f"not transcribed within {self.timeout_s:g} s"
                await send_json(send, 504, error_body(style, 504, "timeout", message))
        finally:
            self.in_flight -= 1

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, route: FormRoute) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(send, route.style)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self._too_large(send, route.style)
                return
            if not message.get("more_body", False):
                break
        payload = bytes(body)
        del body
        if headers.get("content-type", "").lower().startswith(BENTOML_INTERNAL):
            # a parent service that depends on this one by import calls it with pickled arguments; BentoML
            # itself refuses that media type when this is the main (public) server
            await run_watching(self.app, scope, receive, send, payload)
            return
        problem, param, form = await check_form(scope, payload, headers.get("content-type", ""), route)
        if problem or form is None:
            await send_json(send, 400, error_body(route.style, 400, "bad_request", problem, param))
            return
        try:
            handler = FORM_HANDLERS.get(scope["path"])
            if handler is not None:  # the form as parsed here goes to the handler: no second parse, no temp file
                del payload
                await run_watching(_answering(handler, form), scope, receive, send, b"")
                return
            upload = form.getlist(route.file_field)[0]
            if not _safe_filename(upload.filename or ""):  # the same form with a safe file name (see check_form)
                payload, content_type = await _encode_form(form, route.file_field, upload)
                scope = dict(scope)
                scope["headers"] = [
                    (k, v) for k, v in scope.get("headers", []) if k.lower() not in (b"content-type", b"content-length")
                ] + [(b"content-type", content_type.encode()), (b"content-length", str(len(payload)).encode())]
            await run_watching(self.app, scope, receive, send, payload)
        finally:
            await form.close()

    async def _too_large(self, send: Send, style: str) -> None:
        limit_mb = self.max_body / (1024 * 1024)
        body = error_body(style, 413, "upload_too_large", f"the upload is larger than {limit_mb:g} MB")
        await send_json(send, 413, body, {"connection": "close"})

    @staticmethod
    def _recording(send: Send, scope: Scope, record: RequestRecord, counted: bool) -> Send:
        """Give the answer its X-Request-ID, note its status and error code for the request's log line, and
        count it in asr_requests_total{route, status, code, model} (the API routes; the handler leaves the
        chosen model's name in the request state; requests refused before that count under "")."""
        from service.api.metrics import REQUESTS

        state = scope.setdefault("state", {})
        body = bytearray()

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", record.id.encode())]}
            elif message["type"] == "http.response.body" and record.status is not None and not record.done:
                if record.status >= 400:
                    body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    record.done = True
                    record.code = "ok" if record.status < 400 else error_code(bytes(body), record.status)
                    record.model = str(state.get("asr_model", ""))
                    record.audio_s = state.get("asr_audio_s")
                    if counted:
                        labels = {"route": scope["path"], "status": str(record.status), "code": record.code}
                        REQUESTS.labels(**labels, model=record.model).inc()
            await send(message)

        return recorded

    def _shaping(self, send: Send, style: str, readiness: bool = False) -> Send:
        state: dict[str, Any] = {}

        async def shaped(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                state["start"], state["body"] = message, bytearray()
                return
            if "start" not in state:
                await send(message)
                return
            state["body"] += message.get("body", b"")
            if message.get("more_body", False):
                return
            start, raw = state.pop("start"), bytes(state.pop("body"))
            status = start["status"]
            if readiness and status == 503:  # BentoML's "returns False": say why, as /status does
                retry = {} if READINESS.permanent else {"retry-after": "1"}
                reason = READINESS.reason or "the recognizer is not ready yet"
                await send_json(send, 503, {"error": "not_ready", "message": reason}, retry)
                return
            body = reshape_error(status, raw, style)
            if body is None:  # already our shape: only make sure a 503 says when to retry (if waiting can help)
                permanent = READINESS.permanent and b'"not_ready"' in raw
                has = any(k.lower() == b"retry-after" for k, _ in start.get("headers", []))
                if status == 503 and not has and not permanent:
                    start = {**start, "headers": [*start.get("headers", []), (b"retry-after", b"1")]}
                await send(start)
                await send({"type": "http.response.body", "body": raw})
                return
            await send_json(send, status, body, {"retry-after": "1"} if status == 503 else None)

        return shaped


DISCONNECT: Message = {"type": "http.disconnect"}


async def run_watching(app: ASGIApp, scope: Scope, receive: Receive, send: Send, body: bytes | None = None) -> None:
    """Run the app, and cancel it when the client goes away before its response starts: work nobody waits
    for stops (decoding at its next block, segments not yet run leave the batch queue). `body`: the request
    body already read (the guard buffers it), handed to the app once; None: the app reads it itself.

    Once the body is in, only the watcher reads the server's `receive` (it answers when the client
    disconnects or the response is complete); the app's later reads wait for the watcher's verdict."""
    pending = [] if body is None else [body]
    body_in, gone = anyio.Event(), anyio.Event()
    if body is not None:
        body_in.set()
    started = False

    async def app_receive() -> Message:
        if pending:  # handed over once, then let go of (BentoML keeps request objects alive for a while)
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        if body_in.is_set():
            await gone.wait()
            return DISCONNECT
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
        elif not message.get("more_body", False):
            body_in.set()
        return message

    async def app_send(message: Message) -> None:
        nonlocal started
        started = True
        await send(message)

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await body_in.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            if not started:
                tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await app(scope, app_receive, app_send)
        tg.cancel_scope.cancel()


class AbandonedCallLog(logging.Filter):
    """BentoML turns a batch call cancelled because its caller went away (the client hung up, the request timed
    out, or another segment of the same request was refused) into `ServiceUnavailable("process is overloaded")`
    and logs it as an ERROR with two tracebacks, once per segment. Dropped: the entry's line for the request
    says what happened to it (client_gone, timeout, overloaded)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and isinstance(exc.__context__, asyncio.CancelledError))


class CancelOnDisconnect:
    """For the recognizer: a call whose caller (the entry) has gone is cancelled, so its segments leave the
    batch queue before they run (see patches._drop_abandoned_jobs)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            await run_watching(self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)


MAX_FILENAME_BYTES = 200  # BentoML names its temp file after the upload; the filesystem allows 255 bytes


def _safe_filename(name: str) -> bool:
    return len(name.encode("utf-8", "replace")) <= MAX_FILENAME_BYTES and all(c.isprintable() for c in name)


# POST routes answered straight from the form the guard parsed (the entry service registers them when it starts),
# instead of by the app behind it, which would parse the body again (and BentoML write the upload to a file):
# path -> handler(scope, form) -> response.
FormHandler = Callable[[Scope, Any], Awaitable[Any]]
FORM_HANDLERS: dict[str, FormHandler] = {}


def _answering(handler: FormHandler, form: Any) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(scope, form)
        await response(scope, receive, send)

    return app


async def check_form(scope: Scope, body: bytes, content_type: str, route: FormRoute) -> tuple[str, str | None, Any]:
    """('', None, form) when the form is acceptable (the caller closes it); (problem, field at fault or None,
    None) for a 400. A file name that is over-long or has control characters is acceptable: the handler reads
    the parsed form, and a body sent on to BentoML gets a safe name (_encode_form; BentoML's temp file named
    after it would fail with a 500)."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartParser

    fields = ", ".join(sorted(route.fields))
    if not content_type.lower().startswith("multipart/form-data"):
        problem = f"send multipart/form-data with the audio file in the field '{route.file_field}' (fields: {fields})"
        return problem, None, None

    async def chunks() -> Any:
        yield body

    parser = MultiPartParser(Headers(scope=scope), chunks(), max_files=4, max_fields=32)
    # The body is in memory already (up to ASR_MAX_UPLOAD_MB): an upload over Starlette's 1 MB would otherwise be
    # copied to a temporary file on disk and read back
    parser.spool_max_size = len(body) + 1
    try:
        form = await parser.parse()
    except Exception:
        return "the multipart body could not be parsed (are a part's headers or file name too long?)", None, None
    problem, param = "", None
    unknown = sorted(set(form.keys()) - route.fields)
    values = form.getlist(route.file_field)
    if unknown and not route.allow_unknown:
        problem, param = f"unknown field(s) {', '.join(unknown)}; accepted fields: {fields}", unknown[0]
    elif len(values) != 1:
        problem, param = f"exactly one file is expected in the field '{route.file_field}'", route.file_field
    elif not isinstance(values[0], UploadFile):
        problem = f"the field '{route.file_field}' must be an uploaded file (URLs are not fetched)"
        param = route.file_field
    if problem:
        await form.close()
        return problem, param, None
    return "", None, form


async def _encode_form(form: Any, file_field: str, upload: Any) -> tuple[bytes, str]:
    """The same multipart form, with the file renamed `upload` + its (short, printable) extension."""
    import os
    import secrets

    boundary = "asr" + secrets.token_hex(16)
    ext = os.path.splitext(upload.filename or "")[1]
    name = "upload" + (ext if _safe_filename(ext) and len(ext) <= 16 else "")
    parts: list[bytes] = []
    for key, value in form.multi_items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"'
        if key == file_field:
            await value.seek(0)
            data = await value.read()
            ctype = value.content_type or "application/octet-stream"
            parts.append(f'{head}; filename="{name}"\r\nContent-Type: {ctype}\r\n\r\n'.encode() + data + b"\r\n")
        elif isinstance(value, str):
            parts.append(f"{head}\r\n\r\n{value}\r\n".encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
