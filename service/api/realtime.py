"""Streaming transcription over WebSocket: ws://HOST:PORT/v1/realtime?intent=transcription, speaking the
OpenAI Realtime API's transcription session as the `openai` SDK's realtime client speaks it.

Client events: `session.update` (session.type "transcription"; audio.input.format audio/pcm at 24 kHz as
OpenAI defines it or 16 kHz, audio/pcmu, audio/pcma; audio.input.transcription.model and .language; audio.input
.turn_detection `server_vad` {threshold, prefix_padding_ms, silence_duration_ms} or null for explicit
commits; include ["item.input_audio_transcription.logprobs"]), `input_audio_buffer.append` {audio: base64},
`.commit`, `.clear`. Server events: `session.created`, `session.updated`, `input_audio_buffer.speech_started`,
`.speech_stopped`, `.committed`, `.cleared`, `conversation.item.input_audio_transcription.delta` and
`.completed`, and `error` in OpenAI's shape (a bad event gets one and the session goes on).

The same pipeline as the file routes, fed as audio arrives: decode (PCM / G.711 to float, soxr's streaming
resampler to the model's rate) -> segment (Silero VAD, streamed: service/audio/vad.py) -> recognise (NeMo's
buffered CTC, service/recognition/streaming.py; every stream's buffers share the model's batch queue) ->
text. Each client event is handled in order by one task per session; the socket keeps reading meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service.api import metrics
from service.audio.vad import WINDOW, StreamVAD
from service.errors import BadRequest
from service.recognition.streaming import StreamingUnsupported

log = logging.getLogger("asr.realtime")

INTENT = "transcription"
LOGPROBS = "item.input_audio_transcription.logprobs"
MAX_EVENT_BYTES = 16 * 1024 * 1024  # an append of 15 MB of base64 audio (OpenAI's limit) fits
CLOSE_TRY_AGAIN = 1013  # "try again later": too many sessions
CLOSE_POLICY = 1008
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less audio than this
MAX_QUEUED = 3000  # client events waiting for the session's task (5 minutes of 100-ms appends)


def event_id() -> str:
    return "event_" + uuid.uuid4().hex[:20]


def error_event(code: str, message: str, param: str | None = None, client_event: str | None = None) -> dict[str, Any]:
    """OpenAI's error event; `type` is invalid_request_error for a client's mistake, server_error otherwise."""
    kind = "server_error" if code in ("server_error", "recognizer_unavailable") else "invalid_request_error"
    error = {"type": kind, "code": code, "message": message, "param": param, "event_id": client_event}
    return {"type": "error", "event_id": event_id(), "error": error}


class ClientError(Exception):
    """A client event the session cannot take: answered with an error event; the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


# ---------------------------------------------------------------------------------------------- audio in


def _g711_table(law: str) -> npt.NDArray[np.float32]:
    """G.711 byte -> sample in [-1, 1] (ITU-T G.711 expansion, as audioop's ulaw2lin / alaw2lin)."""
    codes = np.arange(256, dtype=np.int32)
    if law == "pcmu":
        u = ~codes & 0xFF
        exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        values = np.where(u & 0x80, -magnitude, magnitude)
    else:
        a = codes ^ 0x55
        exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
        magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
        values = np.where(a & 0x80, magnitude, -magnitude)
    return (values / 32768.0).astype(np.float32)


G711 = {"pcmu": _g711_table("pcmu"), "pcma": _g711_table("pcma")}
FORMATS = {"audio/pcm": "pcm", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}


@dataclass(frozen=True)
class AudioFormat:
    kind: str  # pcm (16-bit little-endian), pcmu or pcma (G.711 at 8 kHz)
    rate: int

    def describe(self) -> dict[str, Any]:
        name = {v: k for k, v in FORMATS.items()}[self.kind]
        return {"type": name, "rate": self.rate} if self.kind == "pcm" else {"type": name}

    def decode(self, data: bytes) -> npt.NDArray[np.float32]:
        """Whole samples (a 16-bit sample split across two appends is joined by the session)."""
        if self.kind == "pcm":
            return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        table: npt.NDArray[np.float32] = G711[self.kind][np.frombuffer(data, np.uint8)]
        return table


def parse_format(value: Any) -> AudioFormat:
    if not isinstance(value, dict) or value.get("type") not in FORMATS:
        raise ClientError("invalid_value", f"audio.input.format.type must be one of {', '.join(FORMATS)}", "format")
    kind = FORMATS[value["type"]]
    if kind != "pcm":
        return AudioFormat(kind, 8000)
    rate = value.get("rate", 24000)
    if rate not in (24000, 16000):
        raise ClientError("invalid_value", "audio/pcm rate must be 24000 (OpenAI's) or 16000", "format.rate")
    return AudioFormat(kind, int(rate))


class Resampler:
    """The session's audio at its format's rate -> the model's rate, streamed (soxr keeps its filter state)."""

    def __init__(self, rate: int, target: int) -> None:
        import soxr

        self.rate, self.target = rate, target
        self.stream = soxr.ResampleStream(rate, target, 1, dtype="float32") if rate != target else None

    def push(self, samples: npt.NDArray[np.float32], last: bool = False) -> npt.NDArray[np.float32]:
        if self.stream is None:
            return samples
        out: npt.NDArray[np.float32] = self.stream.resample_chunk(samples, last=last)
        if last:
            self.__init__(self.rate, self.target)  # type: ignore[misc]
        return out


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def describe(self) -> dict[str, Any]:
        return {"type": "server_vad", **vars(self)}


def parse_turn_detection(value: Any, current: TurnDetection | None) -> TurnDetection | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "server_vad":
        raise ClientError(
            "invalid_value",
            "turn_detection must be {type: server_vad, ...} or null (explicit commits)",
            "turn_detection",
        )
    base = current or TurnDetection()
    threshold = value.get("threshold", base.threshold)
    prefix = value.get("prefix_padding_ms", base.prefix_padding_ms)
    silence = value.get("silence_duration_ms", base.silence_duration_ms)
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ClientError("invalid_value", "turn_detection.threshold must be between 0 and 1", "threshold")
    for name, ms in (("prefix_padding_ms", prefix), ("silence_duration_ms", silence)):
        if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= 10_000:
            raise ClientError("invalid_value", f"turn_detection.{name} must be 0 to 10000 ms", name)
    return TurnDetection(float(threshold), prefix, silence)


@dataclass
class SessionConfig:
    model: Any  # catalog.ServedModel
    language: str
    fmt: AudioFormat = field(default_factory=lambda: AudioFormat("pcm", 24000))
    turn: TurnDetection | None = field(default_factory=TurnDetection)
    logprobs: bool = False

    def describe(self, session_id: str) -> dict[str, Any]:
        return {
            "type": "transcription",
            "id": session_id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": self.fmt.describe(),
                    "transcription": {"model": self.model.name, "language": self.language},
                    "turn_detection": self.turn.describe() if self.turn else None,
                    "noise_reduction": None,
                }
            },
            "include": [LOGPROBS] if self.logprobs else [],
        }


# ---------------------------------------------------------------------------------------------- the session

Send = Callable[[dict[str, Any]], Awaitable[None]]
# a model's streaming buffers -> per buffer [steps, 2] (best id, its log-prob), through the batch queue
Recognize = Callable[[Any, list[npt.NDArray[np.float32]]], Awaitable[list[npt.NDArray[np.float32]]]]


class Utterance:
    """One conversation item: its audio through buffered CTC, the text sent so far."""

    def __init__(self, item_id: str, model: Any, geometry: Any, frontend: Any) -> None:
        from service.recognition.streaming import BufferedCTC

        self.item_id, self.model = item_id, model
        self.ctc = BufferedCTC(geometry, frontend, model.manifest.blank_id)
        self.samples = 0
        self.sent = ""  # text sent in deltas so far
        self.steps_sent = 0  # emitted tokens whose log-probabilities went out with those deltas


class Session:
    """One transcription session: its settings, audio position, VAD state and the utterance in progress.
    `handle` takes each parsed client event in order; server events go out through `send`."""

    def __init__(self, service: Any, send: Send, recognize: Recognize, model_name: str = "") -> None:
        self.service, self.send, self.recognize = service, send, recognize
        self.id = "sess_" + uuid.uuid4().hex[:20]
        chosen = service.catalog.select(model_name, "")
        self.config = SessionConfig(model=chosen, language=chosen.language)
        self.rate = chosen.manifest.sample_rate
        self.resampler = Resampler(self.config.fmt.rate, self.rate)
        self.position = 0  # samples at the model's rate received in this session
        self.odd_byte = b""  # the first byte of a 16-bit sample whose second byte has not come yet
        self.history = np.zeros(0, np.float32)  # recent audio (for the VAD's prefix padding)
        self.history_start = 0
        self.vad: StreamVAD | None = None
        self.speaking = False
        self.silence = 0  # samples of non-speech since speech was last heard
        self.vad_position = 0  # samples the VAD has scored
        self.utterance: Utterance | None = None
        self.previous_item: str | None = None
        self.items = 0
        self._new_vad()

    # -------------------------------------------------------------------------------------- events in

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        client_event = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            if kind == "session.update":
                await self._update(event.get("session"))
            elif kind == "input_audio_buffer.append":
                await self._append(event.get("audio"))
            elif kind == "input_audio_buffer.commit":
                await self._commit()
            elif kind == "input_audio_buffer.clear":
                self._clear()
                await self.send({"type": "input_audio_buffer.cleared", "event_id": event_id()})
            else:
                raise ClientError(
                    "unknown_event",
                    f"unknown or unsupported event type {kind!r} in a transcription session",
                    "type",
                )
        except (ClientError, BadRequest) as exc:  # (BadRequest: an unknown model or language)
            await self.send(error_event(exc.code, exc.message, exc.param, client_event))
        except StreamingUnsupported as exc:
            await self.send(error_event("model_not_streamable", str(exc), "model", client_event))

    async def _update(self, session: Any) -> None:
        if not isinstance(session, dict):
            raise ClientError("invalid_value", "session.update needs a `session` object", "session")
        if session.get("type", "transcription") != "transcription":
            raise ClientError("invalid_value", "this endpoint serves transcription sessions only", "session.type")
        audio = session.get("audio") or {}
        given = audio.get("input") or {} if isinstance(audio, dict) else {}
        if not isinstance(given, dict):
            raise ClientError("invalid_value", "session.audio.input must be an object", "session.audio.input")
        config = self.config
        transcription = given.get("transcription")
        model, language, fmt, turn = config.model, config.language, config.fmt, config.turn
        if transcription is not None:
            if not isinstance(transcription, dict):
                raise ClientError("invalid_value", "audio.input.transcription must be an object", "transcription")
            name, lang = str(transcription.get("model") or ""), str(transcription.get("language") or "")
            if name or lang:
                model = self.service.catalog.select(name, lang)
                language = lang or model.language
        if "format" in given:
            fmt = parse_format(given["format"])
        if "turn_detection" in given:
            turn = parse_turn_detection(given["turn_detection"], config.turn)
        include = session.get("include")
        logprobs = config.logprobs
        if include is not None:
            if not isinstance(include, list) or any(i != LOGPROBS for i in include):
                raise ClientError("invalid_value", f"include takes only {LOGPROBS!r}", "include")
            logprobs = LOGPROBS in include
        if self.utterance is not None and (model is not config.model or fmt != config.fmt or turn != config.turn):
            raise ClientError(
                "audio_buffered",
                "the model, audio format and turn detection cannot change while audio is buffered: commit or clear "
                "first",
                "session",
            )
        self.service.streaming_geometry(model)  # a model without streaming graphs is refused here
        if fmt != config.fmt:
            self.resampler = Resampler(fmt.rate, model.manifest.sample_rate)
        if model is not config.model:
            self.rate = model.manifest.sample_rate
        self.config = SessionConfig(model, language, fmt, turn, logprobs)
        if turn != config.turn:
            self._new_vad()
        await self.send({"type": "session.updated", "event_id": event_id(), "session": self.describe()})

    def describe(self) -> dict[str, Any]:
        return self.config.describe(self.id)

    async def _append(self, audio: Any) -> None:
        if not isinstance(audio, str):
            raise ClientError("invalid_value", "input_audio_buffer.append needs `audio`: base64 audio bytes", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("invalid_audio", "`audio` is not valid base64", "audio") from None
        if self.config.fmt.kind == "pcm":  # a sample's two bytes may arrive in two appends
            data, self.odd_byte = self.odd_byte + data, b""
            if len(data) % 2:
                data, self.odd_byte = data[:-1], data[-1:]
        samples = self.config.fmt.decode(data)
        metrics.REALTIME_AUDIO_SECONDS.labels(model=self.config.model.name).inc(samples.shape[0] / self.config.fmt.rate)
        await self._audio(self.resampler.push(samples))

    # -------------------------------------------------------------------------------------- audio

    def _new_vad(self) -> None:
        self.vad = StreamVAD(self.service.vad_model()) if self.config.turn is not None else None
        self.speaking, self.silence, self.vad_position = False, 0, self.position
        self.history, self.history_start = np.zeros(0, np.float32), self.position

    async def _audio(self, samples: npt.NDArray[np.float32]) -> None:
        """New audio at the model's rate: through the VAD (server_vad) into the utterance, or straight in."""
        self.position += samples.shape[0]
        if self.config.turn is None or self.vad is None:  # explicit commits: everything is the utterance
            if self.utterance is None:
                self._begin()
            await self._feed(samples)
            return
        self._remember(samples)
        # the VAD hears 16 kHz, the rate of every model streaming serves (StreamingUnsupported otherwise)
        probs = await self.service.run_blocking(self.vad.push, samples)
        turn = self.config.turn
        pending: tuple[int, int] | None = None  # speech audio scored but not yet fed to the utterance
        for p in probs:
            window_start, window_end = self.vad_position, self.vad_position + WINDOW
            self.vad_position = window_end
            if not self.speaking:
                if p >= turn.threshold:
                    self.speaking, self.silence = True, 0
                    first = max(self.history_start, window_start - turn.prefix_padding_ms * self.rate // 1000)
                    utterance = self._begin()
                    started = {"type": "input_audio_buffer.speech_started", "event_id": event_id()}
                    await self.send({**started, "item_id": utterance.item_id, "audio_start_ms": self._ms(first)})
                    pending = (first, window_end)
                continue
            pending = (pending[0] if pending else window_start, window_end)
            self.silence = 0 if p >= turn.threshold else self.silence + WINDOW
            # silence in whole 32-ms windows, rounded down (500 ms: 15 windows, 480 ms of it below the threshold):
            # Silero's probability falls 40-70 ms after the speech does, so the audio is quiet for longer than that
            if self.silence >= max(1, turn.silence_duration_ms * self.rate // 1000 // WINDOW) * WINDOW:
                self.speaking = False
                await self._feed(self._recent(*pending))
                pending = None
                stopped = {"type": "input_audio_buffer.speech_stopped", "event_id": event_id()}
                item = self.utterance.item_id if self.utterance else ""
                await self.send({**stopped, "item_id": item, "audio_end_ms": self._ms(window_end)})
                await self._complete()
        if pending:
            await self._feed(self._recent(*pending))

    def _ms(self, samples: int) -> int:
        return int(samples * 1000 // self.rate)

    def _remember(self, samples: npt.NDArray[np.float32]) -> None:
        """Keep the last few seconds: what speech_started's prefix padding reaches back to."""
        self.history = np.concatenate([self.history, samples])
        keep = self.rate * 12
        if self.history.shape[0] > 2 * keep:
            drop = self.history.shape[0] - keep
            self.history, self.history_start = self.history[drop:], self.history_start + drop

    def _recent(self, start: int, end: int) -> npt.NDArray[np.float32]:
        return self.history[start - self.history_start : end - self.history_start]

    def _begin(self) -> Utterance:
        self.items += 1
        item_id = f"item_{self.id[5:17]}_{self.items:04d}"
        model = self.config.model
        geometry, frontend = self.service.streaming_geometry(model)
        self.utterance = Utterance(item_id, model, geometry, frontend)
        return self.utterance

    async def _feed(self, samples: npt.NDArray[np.float32]) -> None:
        u = self.utterance
        if u is None or samples.shape[0] == 0:
            return
        u.samples += samples.shape[0]
        buffers = await self.service.run_blocking(u.ctc.feed, samples)
        await self._recognize(u, buffers)

    async def _recognize(self, u: Utterance, buffers: list[npt.NDArray[np.float32]]) -> None:
        if not buffers:
            return
        results = await self.recognize(u.model, buffers)
        for result in results:
            if result.shape[0] == 0:
                raise RecognizerFailed("the model could not run on this stream; the server log has the details")
            u.ctc.take(result[:, 0].astype(np.int64), result[:, 1])
        text = u.model.detok.text(u.ctc.tokens)
        if text.startswith(u.sent) and len(text) > len(u.sent):
            delta, first = text[len(u.sent) :], u.steps_sent
            u.sent, u.steps_sent = text, len(u.ctc.steps)
            event = {
                "type": "conversation.item.input_audio_transcription.delta",
                "event_id": event_id(),
                "item_id": u.item_id,
                "content_index": 0,
                "delta": delta,
            }
            if self.config.logprobs:
                event["logprobs"] = self._logprobs(u, first)
            await self.send(event)

    def _logprobs(self, u: Utterance, first: int = 0) -> list[dict[str, Any]]:
        """Emitted tokens from the `first` on: each one's text and the log-probability of the output step that
        emitted it (OpenAI's LogProbProperties)."""
        out = []
        for token, logprob in u.ctc.steps[first:]:
            piece = u.model.manifest.vocabulary[token].replace(u.model.manifest.tokenizer.word_marker, " ")
            out.append({"token": piece, "logprob": round(logprob, 6), "bytes": list(piece.encode("utf-8"))})
        return out

    async def _commit(self) -> None:
        u = self.utterance
        if self.config.turn is None:
            await self._feed(self.resampler.push(np.zeros(0, np.float32), last=True))
        min_samples = MIN_COMMIT_MS * self.rate // 1000
        if u is None or u.samples < min_samples:
            have = 0 if u is None else u.samples * 1000 // self.rate
            raise ClientError(
                "input_audio_buffer_commit_empty",
                f"buffer too small: expected at least {MIN_COMMIT_MS} ms of audio, have {have} ms",
                None,
            )
        self.speaking, self.silence = False, 0
        await self._complete()

    async def _complete(self) -> None:
        """Commit the utterance: `committed`, its last buffers, and `completed` with the whole transcript."""
        u = self.utterance
        if u is None:
            return
        self.utterance = None
        await self.send(
            {
                "type": "input_audio_buffer.committed",
                "event_id": event_id(),
                "item_id": u.item_id,
                "previous_item_id": self.previous_item,
            }
        )
        self.previous_item = u.item_id
        await self._recognize(u, await self.service.run_blocking(u.ctc.finish))
        event = {
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": event_id(),
            "item_id": u.item_id,
            "content_index": 0,
            "transcript": u.model.detok.text(u.ctc.tokens),
            "usage": {"type": "duration", "seconds": round(u.samples / self.rate, 3)},
        }
        if self.config.logprobs:
            event["logprobs"] = self._logprobs(u)
        await self.send(event)

    def _clear(self) -> None:
        self.utterance, self.odd_byte = None, b""
        if self.config.turn is not None:
            self._new_vad()


class RecognizerFailed(Exception):
    """The recognizer could not run a stream's buffers (it died, or ONNX Runtime failed)."""


# ---------------------------------------------------------------------------------------------- the socket


@dataclass
class Limits:
    sessions: int
    max_s: float
    idle_s: float


class Gate:
    """Sessions open in this process, against ASR_REALTIME_SESSIONS."""

    def __init__(self) -> None:
        self.open = 0


GATE = Gate()


async def serve(websocket: Any, service: Any, limits: Limits) -> None:
    """One WebSocket connection, from accept to close; every path frees the session's state."""
    from starlette.websockets import WebSocketDisconnect

    await websocket.accept()
    params = websocket.query_params
    if params.get("intent", INTENT) != INTENT:
        await _refuse(websocket, "invalid_intent", "this endpoint serves intent=transcription only", CLOSE_POLICY)
        return
    if limits.sessions == 0:
        await _refuse(websocket, "streaming_off", "streaming is off on this server (ASR_REALTIME_SESSIONS=0)", 1008)
        return
    if GATE.open >= limits.sessions:
        why = f"too many streaming sessions ({limits.sessions} open); try again later"
        await _refuse(websocket, "too_many_sessions", why, CLOSE_TRY_AGAIN)
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
            session = Session(service, send, service.recognize_stream, str(params.get("model") or ""))
            service.streaming_geometry(session.config.model)
        except (BadRequest, ClientError) as exc:
            await _refuse(websocket, getattr(exc, "code", "invalid_value"), str(exc), CLOSE_POLICY)
            return
        except StreamingUnsupported as exc:
            await _refuse(websocket, "model_not_streamable", str(exc), CLOSE_POLICY)
            return
        await send({"type": "session.created", "event_id": event_id(), "session": session.describe()})
        worker = asyncio.create_task(_work(session, queue, websocket))
        deadline = time.monotonic() + limits.max_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await _refuse(websocket, "session_expired", f"sessions last at most {limits.max_s:g} s", 1000, send)
                break
            try:
                message = await asyncio.wait_for(websocket.receive(), timeout=min(limits.idle_s, remaining))
            except TimeoutError:
                if deadline - time.monotonic() <= 0:
                    continue
                await _refuse(websocket, "idle_timeout", f"no event for {limits.idle_s:g} s", 1000, send)
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
                await _refuse(websocket, "server_busy", "audio arrives faster than it can be recognised", 1013, send)
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
            await _refuse(websocket, "recognizer_unavailable", f"{exc}; reconnect shortly", 1011, session.send)
            return
        except Exception as exc:  # the recognizer process died, a connection error: never a silent hang
            log.exception("stream %s failed", session.id)
            await _refuse(websocket, "server_error", f"the session failed ({type(exc).__name__})", 1011, session.send)
            return


async def _refuse(websocket: Any, code: str, message: str, close: int, send: Send | None = None) -> None:
    with contextlib.suppress(Exception):
        event = error_event(code, message)
        if send is not None:
            await send(event)
        else:
            await websocket.send_text(json.dumps(event))
        await websocket.close(code=close)
