"""Error answers in the service's two shapes, {"error": code, "message": text} and OpenAI's error object, and
BentoML's own error bodies rewritten into them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.errors import STATUS_CODES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The media type of a parent service's calls (one that depends on this one by import): pickled arguments
BENTOML_INTERNAL = "application/vnd.bentoml+pickle"


def error_body(style: str, status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """`style` "asr": {"error": code, "message": text}; "openai": OpenAI's error object."""
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


def reshape_error(status: int, body: bytes, style: str = "asr", read_fields: bool = True) -> dict[str, Any] | None:
    """BentoML's error body -> ours (in the route's style); None when it already has that shape. `read_fields`:
    read BentoML's 1.4 shapes (a list, a validation `detail`); else its body is the message, whole."""
    try:
        data: Any = json.loads(body or b"null")
    except (ValueError, RecursionError):
        data = body.decode("utf-8", "replace").strip()
    if isinstance(data, dict) and set(data) == {"error", "message"}:
        return None if style == "asr" else error_body(style, status, str(data["error"]), str(data["message"]))
    if isinstance(data, dict) and isinstance(data.get("error"), dict):  # already OpenAI's shape
        return None
    if not read_fields:
        data = body.decode("utf-8", "replace").strip()
    if isinstance(data, list) and data and isinstance(data[0], dict):  # BentoML 4xx: [{"error": ...}]
        data = data[0]
    message = data.get("error", "") if isinstance(data, dict) else str(data or "")
    if isinstance(data, dict) and isinstance(data.get("detail"), list):
        details = [f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}" for d in data["detail"]]
        message = "; ".join(d.strip(": ") for d in details) or message
    if status >= 500 and status not in (503, 504):
        message = "internal error; the server log has the details"
    return error_body(style, status, STATUS_CODES.get(status, "error"), str(message)[:500] or "request failed")
