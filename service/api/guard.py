"""ASGI middleware in front of the BentoML app: the parts of the error contract BentoML does not give us.

- Uploads over the size limit get 413 while the body arrives (Content-Length first, then counted bytes),
  before BentoML buffers anything (BentoML 1.4 has no body limit).
- The transcription routes' forms are parsed here, once (service/api/forms.py), and answered by the route's
  door from that parsed form: nothing parses it again, and the upload is never written to a temporary file
  (BentoML writes one for a `Path` argument).
- The concurrency limit (429 at once) and the request timeout (504) of the API routes are enforced here:
  BentoML adds user middlewares inside its own traffic middlewares, whose bodies we could not reshape.
  BentoML's own limits stay configured, looser, as a backstop.
- Every error response has one shape, {"error": code, "message": text}: BentoML's own 400 (validation)
  and 503 bodies are rewritten, and 4xx arrays (BentoML issue 4232) become objects. Every 503 carries
  Retry-After; /readyz's says why the service is not ready.
- One log line and one metric per request (service/api/requestlog.py).
"""

from __future__ import annotations

from typing import Any

import anyio

from service.api.disconnect import run_watching
from service.api.forms import FormHandler, FormRoute, check_form
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
from service.pipeline.client import Readiness


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
    ) -> None:
        self.app, self.max_body, self.routes = app, max_body, routes
        self.max_concurrency, self.timeout_s, self.readiness = max_concurrency, timeout_s, readiness
        # BentoML's own error bodies read field by field (their shapes are checked at start: service/patches.py);
        # else wrapped whole
        self.read_bentoml_bodies = read_bentoml_bodies
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.routes.get(scope["path"])
        style = route.style if route else "asr"
        record = RequestRecord.start(scope)
        send = record.recording(send, scope, counted=route is not None and scope["method"] == "POST")
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
        del payload
        if problem or form is None:
            await send_json(send, 400, error_body(route.style, 400, "bad_request", problem, param))
            return
        try:
            await run_watching(_answering(route.handler, form), scope, receive, send, b"")
        finally:
            await form.close()

    async def _too_large(self, send: Send, style: str) -> None:
        limit_mb = self.max_body / (1024 * 1024)
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


def _answering(handler: FormHandler, form: Any) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(scope, form)
        await response(scope, receive, send)

    return app
