"""ASGI middleware in front of the BentoML app: the parts of the error contract BentoML does not give us.

- Uploads over the size limit get 413 while the body arrives (Content-Length first, then counted bytes),
  before BentoML buffers anything (BentoML 1.4 has no body limit).
- The transcription routes' forms are parsed here, once (service/api/forms.py), and answered by the route's
  door from that parsed form: nothing parses it again. A body up to forms.SPOOL_BYTES stays in memory (BentoML
  writes a file for every `Path` argument); a larger one, and its upload, wait in unnamed temporary files.
- The concurrency limit (429 at once) and the request timeout (504) of the API routes are enforced here:
  BentoML adds user middlewares inside its own traffic middlewares, whose bodies we could not reshape.
  BentoML's own limits stay configured, looser, as a backstop.
- Every error response has one shape, {"error": code, "message": text}: BentoML's own 400 (validation)
  and 503 bodies are rewritten, and 4xx arrays (BentoML issue 4232) become objects. Every 503 carries
  Retry-After; /readyz's says why the service is not ready.
- One log line and one metric per request (service/api/requestlog.py).
- With API keys (service/api/keys.py), every path but the open ones (probes, the page, the Swagger page and, by
  setting, /metrics and /docs.json) and CORS preflights needs `Authorization: Bearer <key>`, and the WebSocket
  also takes it as the `openai-insecure-api-key.<key>` subprotocol, checked before the upgrade: else 401 with
  `WWW-Authenticate: Bearer` (OpenAI's error object on /v1), nothing run.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from typing import Any

import anyio

from service import metrics
from service.api.disconnect import run_watching
from service.api.forms import NO_ROOM, SPOOL_BYTES, FormHandler, FormRoute, check_form
from service.api.keys import SUBPROTOCOL, KeyStore
from service.api.replies import (
    BENTOML_INTERNAL,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    error_body,
    reshape_error,
    send_json,
)
from service.api.requestlog import RequestRecord
from service.errors import Overloaded
from service.pipeline.client import Readiness


@dataclass(frozen=True)
class Access:
    """Who may use what: the keys, the paths open without one, and the origins whose browsers may read answers."""

    keys: KeyStore = field(default_factory=KeyStore)
    open_paths: frozenset[str] = frozenset()  # exact paths; a path ending in "/" opens what starts with it
    cors_origins: tuple[str, ...] = ()  # "*": any

    def is_open(self, path: str) -> bool:
        return (
            not self.keys.enabled
            or path in self.open_paths
            or any(p.endswith("/") and len(p) > 1 and path.startswith(p) for p in self.open_paths)
        )

    def key_of(self, headers: dict[str, str], websocket: bool = False) -> tuple[str | None, str]:
        """(the key's id, "") when a key in force was presented; (None, reason) else: missing or invalid."""
        scheme, _, presented = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            presented = ""
        if not presented and websocket:
            offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
            presented = next((p[len(SUBPROTOCOL) :] for p in offered if p.startswith(SUBPROTOCOL)), "")
        presented = presented.strip()
        if not presented:
            return None, "missing"
        found = self.keys.verify(presented)
        return (found, "") if found else (None, "invalid")

    def cors_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """For an answer the guard writes itself (a 401): what a browser of an allowed origin needs to read it."""
        origin = headers.get("origin", "")
        if origin and ("*" in self.cors_origins or origin in self.cors_origins):
            return {"access-control-allow-origin": origin, "vary": "Origin"}
        return {}


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        max_body: int,
        routes: dict[str, FormRoute],
        max_concurrency: int,
        timeout_s: float,
        readiness: Readiness,
        read_bentoml_bodies: bool = True,
        access: Access | None = None,
        own: dict[str, ASGIApp] | None = None,
    ) -> None:
        self.app, self.max_body, self.routes = app, max_body, routes
        self.own = own or {}  # paths our own ASGI apps answer (after the keys), whatever the method
        self.max_concurrency, self.timeout_s, self.readiness = max_concurrency, timeout_s, readiness
        # BentoML's own error bodies read field by field (their shapes are checked at start: service/patches.py);
        # else wrapped whole
        self.read_bentoml_bodies = read_bentoml_bodies
        self.access = access or Access()
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if await self._admitted_socket(scope, receive, send):
                await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.routes.get(scope["path"])
        style = route.style if route else ("openai" if scope["path"].startswith("/v1/") else "asr")
        record = RequestRecord.start(scope)
        send = record.recording(send, scope, counted=route is not None and scope["method"] == "POST")
        send = self._shaping(send, style, readiness=scope["path"] == "/readyz")
        try:
            headers = _headers(scope)
            if not self._admitted(scope, headers, record):
                await self._unauthorized(send, style, headers, record.key_reason)
                return
            await self._route(scope, receive, send, route, style, headers)
        finally:
            record.log()

    def _admitted(self, scope: Scope, headers: dict[str, str], record: RequestRecord) -> bool:
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if preflight or self.access.is_open(scope["path"]):
            return True
        record.key, record.key_reason = self.access.key_of(headers)
        if record.key is None:
            metrics.AUTH_FAILURES.labels(door="http", reason=record.key_reason).inc()
            return False
        scope.setdefault("state", {})["asr_key"] = record.key
        return True

    async def _unauthorized(self, send: Send, style: str, headers: dict[str, str], reason: str) -> None:
        message = "an API key is required: Authorization: Bearer <key>" if reason == "missing" else "invalid API key"
        code = "invalid_api_key" if style == "openai" else "unauthorized"
        extra = {"www-authenticate": 'Bearer realm="asr"', **self.access.cors_headers(headers)}
        await send_json(send, 401, error_body(style, 401, code, message), extra)

    async def _admitted_socket(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """A WebSocket with a key in force (header or subprotocol), or the handshake is refused with 401."""
        if self.access.is_open(scope["path"]):
            return True
        headers = _headers(scope)
        found, reason = self.access.key_of(headers, websocket=True)
        if found is not None:
            scope.setdefault("state", {})["asr_key"] = found
            return True
        metrics.AUTH_FAILURES.labels(door="websocket", reason=reason).inc()
        await receive()  # the websocket.connect the server queued
        if "websocket.http.response" in scope.get("extensions", {}):
            message = "an API key is required" if reason == "missing" else "invalid API key"
            body = json.dumps(error_body("openai", 401, "invalid_api_key", message)).encode()
            start_headers = [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="asr"'),
                *[(k.encode(), v.encode()) for k, v in self.access.cors_headers(headers).items()],
            ]
            await send({"type": "websocket.http.response.start", "status": 401, "headers": start_headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # a server without the denial-response extension answers 403
            await send({"type": "websocket.close", "code": 1008})
        return False

    async def _route(
        self, scope: Scope, receive: Receive, send: Send, route: FormRoute | None, style: str, headers: dict[str, str]
    ) -> None:
        if scope["path"] in self.own:
            await self.own[scope["path"]](scope, receive, send)
            return
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
                await self._guarded(scope, receive, tracking_send, route, headers)
        except TimeoutError:
            if not started:
                message = f"not transcribed within {self.timeout_s:g} s"
                await send_json(send, 504, error_body(style, 504, "timeout", message))
        finally:
            self.in_flight -= 1

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, route: FormRoute, headers: dict[str, str]
    ) -> None:
        max_body = route.max_body or self.max_body
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body:
            await self._too_large(send, route.style, max_body)
            return
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed below)
        try:
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                piece = message.get("body", b"")
                size += len(piece)
                if size > max_body:
                    await self._too_large(send, route.style, max_body)
                    return
                try:
                    body.write(piece)
                except OSError:
                    await self._no_room(send, route.style)
                    return
                if not message.get("more_body", False):
                    break
            if headers.get("content-type", "").lower().startswith(BENTOML_INTERNAL):
                # a parent service that depends on this one by import calls it with pickled arguments; BentoML
                # itself refuses that media type when this is the main (public) server
                body.seek(0)
                payload = body.read()
                body.close()
                await run_watching(self.app, scope, receive, send, payload)
                return
            try:
                problem, param, form = await check_form(scope, body, headers.get("content-type", ""), route)
            except OSError:  # the parser's own spool of a large upload
                await self._no_room(send, route.style)
                return
        finally:
            body.close()
        if problem or form is None:
            await send_json(send, 400, error_body(route.style, 400, "bad_request", problem, param))
            return
        try:
            await run_watching(_answering(route.handler, form), scope, receive, send, b"")
        finally:
            await form.close()

    async def _no_room(self, send: Send, style: str) -> None:
        """A large upload waits in a temporary file: where the disk is full, the server is, for now (503)."""
        await send_json(send, 503, error_body(style, 503, Overloaded.code, NO_ROOM), {"retry-after": "5"})

    async def _too_large(self, send: Send, style: str, max_body: int) -> None:
        limit_mb = max_body / (1024 * 1024)
        body = error_body(style, 413, "upload_too_large", f"the upload is larger than {limit_mb:g} MB")
        await send_json(send, 413, body, {"connection": "close"})

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
                retry = {} if self.readiness.permanent else {"retry-after": "1"}
                reason = self.readiness.reason or "the recognizer is not ready yet"
                await send_json(send, 503, {"error": "not_ready", "message": reason}, retry)
                return
            body = reshape_error(status, raw, style, self.read_bentoml_bodies)
            if body is None:  # already our shape: only make sure a 503 says when to retry (if waiting can help)
                permanent = self.readiness.permanent and b'"not_ready"' in raw
                has = any(k.lower() == b"retry-after" for k, _ in start.get("headers", []))
                if status == 503 and not has and not permanent:
                    start = {**start, "headers": [*start.get("headers", []), (b"retry-after", b"1")]}
                await send(start)
                await send({"type": "http.response.body", "body": raw})
                return
            await send_json(send, status, body, {"retry-after": "1"} if status == 503 else None)

        return shaped


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _answering(handler: FormHandler, form: Any) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(scope, form)
        await response(scope, receive, send)

    return app
