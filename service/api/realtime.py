"""Streaming transcription over WebSocket: ws://HOST:PORT/v1/realtime?intent=transcription. This module is the
socket: accept, the session limits, reading frames into client events, one task per session that handles them
in order (service/api/realtime_session.py) while the socket keeps reading, and every way a session ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from service import metrics
from service.api.keys import SUBPROTOCOL
from service.api.realtime_session import ClientError, Send, Session, error_event, event_id
from service.errors import BadRequest
from service.pipeline.policy import Policy
from service.pipeline.streams import RecognizerFailed, StreamTranscription
from service.recognition.streaming import StreamingUnsupported

log = logging.getLogger("asr.realtime")

INTENT = "transcription"
MAX_EVENT_BYTES = 16 * 1024 * 1024  # an append of 15 MB of base64 audio (OpenAI's limit) fits
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_AGAIN = 1013  # "try again later": too many sessions, or audio faster than it can be recognised
MAX_QUEUED = 3000  # client events waiting for the session's task (5 minutes of 100-ms appends)


@dataclass(frozen=True)
class SessionLimits:
    sessions: int  # open at once in this process (ASR_REALTIME_SESSIONS; 0: streaming off)
    max_s: float  # a session's longest life
    idle_s: float  # longest wait for a client event


class Gate:
    """Sessions open in this process, against ASR_REALTIME_SESSIONS."""

    def __init__(self) -> None:
        self.open = 0


GATE = Gate()


async def serve(websocket: Any, streams: StreamTranscription, policy: Policy, limits: SessionLimits) -> None:
    """One WebSocket connection, from accept to close; every path frees the session's state."""
    from starlette.websockets import WebSocketDisconnect

    # a subprotocol the client offered, but never the one that carries its key (checked by the request guard)
    offered = [p for p in websocket.scope.get("subprotocols", []) if not p.startswith(SUBPROTOCOL)]
    await websocket.accept(subprotocol=offered[0] if offered else None)
    params = websocket.query_params
    if params.get("intent", INTENT) != INTENT:
        await _close(websocket, CLOSE_POLICY, "invalid_intent", "this endpoint serves intent=transcription only")
        return
    if limits.sessions == 0:
        why = "streaming is off on this server (ASR_REALTIME_SESSIONS=0)"
        await _close(websocket, CLOSE_POLICY, "streaming_off", why)
        return
    if GATE.open >= limits.sessions:
        why = f"too many streaming sessions ({limits.sessions} open); try again later"
        await _close(websocket, CLOSE_TRY_AGAIN, "too_many_sessions", why)
        return
    GATE.open += 1
    metrics.REALTIME_SESSIONS.inc()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    sending = asyncio.Lock()

    async def send(event: dict[str, Any]) -> None:
        async with sending:
            await websocket.send_text(json.dumps(event, ensure_ascii=False))

    worker: asyncio.Task[None] | None = None
    try:
        try:
            session = Session(streams, policy, send, str(params.get("model") or ""))
        except (BadRequest, ClientError) as exc:
            await _close(websocket, CLOSE_POLICY, getattr(exc, "code", "invalid_value"), str(exc))
            return
        except StreamingUnsupported as exc:
            await _close(websocket, CLOSE_POLICY, "model_not_streamable", str(exc))
            return
        await send({"type": "session.created", "event_id": event_id(), "session": session.describe()})
        worker = asyncio.create_task(_work(session, queue, websocket))
        deadline = time.monotonic() + limits.max_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = f"sessions last at most {limits.max_s:g} s"
                await _close(websocket, CLOSE_NORMAL, "session_expired", why, send)
                break
            try:
                message = await asyncio.wait_for(websocket.receive(), timeout=min(limits.idle_s, remaining))
            except TimeoutError:
                if deadline - time.monotonic() <= 0:
                    continue
                await _close(websocket, CLOSE_NORMAL, "idle_timeout", f"no event for {limits.idle_s:g} s", send)
                break
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text")
            if raw is None:
                raw = (message.get("bytes") or b"").decode("utf-8", "replace")
            event = _parse(raw)
            if "error" in event and event.get("type") == "error":
                await send(event)
                continue
            if worker.done():
                break
            if queue.qsize() >= MAX_QUEUED:  # the client sends faster than the session can recognise
                why = "audio arrives faster than it can be recognised"
                await _close(websocket, CLOSE_TRY_AGAIN, "server_busy", why, send)
                break
            queue.put_nowait(event)
    except WebSocketDisconnect:
        pass
    finally:
        GATE.open -= 1
        metrics.REALTIME_SESSIONS.dec()
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(BaseException):
                await worker


def _parse(raw: str) -> dict[str, Any]:
    """A client event, or an error event to send back (malformed JSON, not an object, too large)."""
    if len(raw) > MAX_EVENT_BYTES:
        return error_event("invalid_event", f"an event may hold at most {MAX_EVENT_BYTES} bytes")
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, ValueError) as exc:
        return error_event("invalid_json", f"the event is not valid JSON: {exc}")
    except RecursionError:  # e.g. 500,000 nested brackets: deeper than any event, and than the parser goes
        return error_event("invalid_json", "the event is not valid JSON: nested too deeply")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return error_event("invalid_event", "an event is a JSON object with a string `type`", "type")
    return event


async def _work(session: Session, queue: asyncio.Queue[dict[str, Any] | None], websocket: Any) -> None:
    """The session's events, in order. A recognizer failure ends the session (an error event, close 1011)."""
    while True:
        event = await queue.get()
        if event is None:
            return
        try:
            await session.handle(event)
        except RecognizerFailed as exc:
            log.error("stream %s: %s", session.id, exc)
            why = f"{exc}; reconnect shortly"
            await _close(websocket, CLOSE_SERVER_ERROR, "recognizer_unavailable", why, session.send)
            return
        except Exception as exc:  # the recognizer process died, a connection error: never a silent hang
            log.exception("stream %s failed", session.id)
            why = f"the session failed ({type(exc).__name__})"
            await _close(websocket, CLOSE_SERVER_ERROR, "server_error", why, session.send)
            return


async def _close(websocket: Any, close_code: int, code: str, message: str, send: Send | None = None) -> None:
    """End the connection with an error event saying why (`code`, `message`) and the WebSocket close code:
    refusals, limits reached, failures. `send`: the session's sender, once a session exists (its lock keeps
    the event whole among others)."""
    with contextlib.suppress(Exception):
        event = error_event(code, message)
        if send is not None:
            await send(event)
        else:
            await websocket.send_text(json.dumps(event))
        await websocket.close(code=close_code)
