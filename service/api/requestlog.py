"""One log line and one metric per request: `<request id> <method> <path> <status> <code> model=... audio_s=...
<ms> ms client=... key=...`, and asr_requests_total{route, status, code, model, key} for the API routes (`key`:
the API key's id, never the key)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass

from service import metrics
from service.api.replies import Message, Scope, Send, error_code

REQUEST_LOG = logging.getLogger("asr.request")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
PROBES = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})


@dataclass
class RequestRecord:
    """One request's log line. The id is the client's X-Request-ID when it sends a usable one (up to 128 of
    A-Z a-z 0-9 and ._:@/+=-), else a new one; the answer carries it back. Probes are logged only when they fail."""

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
    key: str | None = None  # the API key's id (the first 8 hex digits of its SHA-256), when one was presented
    key_reason: str = ""  # why none was accepted: missing, invalid

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
        key = f" key={self.key}" if self.key else ""
        REQUEST_LOG.info(
            "%s %s %s %s %s%s%s %.0f ms client=%s%s",
            self.id, self.method, self.path, status, code, model, audio, took_ms, self.client, key,
        )  # fmt: skip

    def recording(self, send: Send, scope: Scope, counted: bool) -> Send:
        """`send` that gives the answer its X-Request-ID, notes its status and error code for the log line, and
        counts it in asr_requests_total (`counted`: the API routes; the door leaves the chosen model's name in
        the request state; requests refused before that count under "")."""
        state = scope.setdefault("state", {})
        body = bytearray()

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", self.id.encode())]}
            elif message["type"] == "http.response.body" and self.status is not None and not self.done:
                if self.status >= 400:
                    body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    self.done = True
                    self.code = "ok" if self.status < 400 else error_code(bytes(body), self.status)
                    self.model = str(state.get("asr_model", ""))
                    self.audio_s = state.get("asr_audio_s")
                    if counted:
                        labels = {"route": scope["path"], "status": str(self.status), "code": self.code}
                        metrics.REQUESTS.labels(**labels, model=self.model, key=self.key or "").inc()
            await send(message)

        return recorded
