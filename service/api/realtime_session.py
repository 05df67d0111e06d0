"""One OpenAI Realtime transcription session, as the `openai` SDK's realtime client speaks it: its settings, and
each client event turned into pipeline calls (service/pipeline/turns.py, streams.py) and server events.

Client events: `session.update` (session.type "transcription"; audio.input.format audio/pcm at 24 kHz as
OpenAI defines it or 16 kHz, audio/pcmu, audio/pcma; audio.input.transcription.model and .language, and our
.itn / .itn_digits for `completed` transcripts in written form; audio.input.turn_detection `server_vad`
{threshold, prefix_padding_ms, silence_duration_ms} or null for explicit commits; include
["item.input_audio_transcription.logprobs"]), `input_audio_buffer.append` {audio: base64}, `.commit`, `.clear`.
Server events: `session.created`, `session.updated`, `input_audio_buffer.speech_started`, `.speech_stopped`,
`.committed`, `.cleared`, `conversation.item.input_audio_transcription.delta` and `.completed`, and `error` in
OpenAI's shape (a bad event gets one and the session goes on).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service import metrics
from service.audio.pcm import G711_RATE, Resampler, decode_pcm
from service.catalog import ServedModel
from service.errors import BadRequest
from service.pipeline.policy import Policy
from service.pipeline.streams import Delta, StreamTranscription, Utterance
from service.pipeline.turns import Speech, SpeechStarted, SpeechStopped, TurnDetection, TurnDetector
from service.recognition.streaming import StreamingUnsupported
from service.recognition.written import Writing

LOGPROBS = "item.input_audio_transcription.logprobs"
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less audio than this
FORMATS = {"audio/pcm": "pcm", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
OPENAI_PCM_RATE = 24000


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


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class AudioFormat:
    kind: str  # pcm (16-bit little-endian), pcmu or pcma (G.711 at 8 kHz)
    rate: int

    def describe(self) -> dict[str, Any]:
        name = {v: k for k, v in FORMATS.items()}[self.kind]
        return {"type": name, "rate": self.rate} if self.kind == "pcm" else {"type": name}


def parse_format(value: Any) -> AudioFormat:
    if not isinstance(value, dict) or value.get("type") not in FORMATS:
        raise ClientError("invalid_value", f"audio.input.format.type must be one of {', '.join(FORMATS)}", "format")
    kind = FORMATS[value["type"]]
    if kind != "pcm":
        return AudioFormat(kind, G711_RATE)
    rate = value.get("rate", OPENAI_PCM_RATE)
    if rate not in (OPENAI_PCM_RATE, 16000):
        raise ClientError("invalid_value", "audio/pcm rate must be 24000 (OpenAI's) or 16000", "format.rate")
    return AudioFormat(kind, int(rate))


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
    model: ServedModel
    language: str
    fmt: AudioFormat = field(default_factory=lambda: AudioFormat("pcm", OPENAI_PCM_RATE))
    turn: TurnDetection | None = field(default_factory=TurnDetection)
    logprobs: bool = False
    itn: bool | None = None  # as asked (None: the server's ASR_ITN)
    itn_digits: str = ""
    writing: Writing | None = None  # what `completed` transcripts are written in (deltas stay as recognised)

    def describe(self, session_id: str) -> dict[str, Any]:
        turn = {"type": "server_vad", **vars(self.turn)} if self.turn else None
        transcription: dict[str, Any] = {"model": self.model.name, "language": self.language}
        transcription["itn"] = self.writing is not None
        if self.writing is not None:
            transcription["itn_digits"] = self.writing.digits
        return {
            "type": "transcription",
            "id": session_id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": self.fmt.describe(),
                    "transcription": transcription,
                    "turn_detection": turn,
                    "noise_reduction": None,
                }
            },
            "include": [LOGPROBS] if self.logprobs else [],
        }


# ---------------------------------------------------------------------------------------------- the session

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Session:
    """One transcription session: its settings, audio position, turn detection and the utterance in progress.
    `handle` takes each parsed client event in order; server events go out through `send`."""

    def __init__(self, streams: StreamTranscription, policy: Policy, send: Send, model_name: str = "") -> None:
        self.streams, self.policy, self.send = streams, policy, send
        self.id = "sess_" + uuid.uuid4().hex[:20]
        chosen = policy.model(model_name, "")
        streams.check(chosen)
        self.config = SessionConfig(model=chosen, language=chosen.language, writing=policy.writing(chosen, None))
        self.rate = chosen.manifest.sample_rate
        self.resampler = Resampler(self.config.fmt.rate, self.rate)
        self.position = 0  # samples at the model's rate received in this session
        self.odd_byte = b""  # the first byte of a 16-bit sample whose second byte has not come yet
        self.turns: TurnDetector | None = None
        self.utterance: Utterance | None = None
        self.previous_item: str | None = None
        self.items = 0
        self._new_turns()

    def describe(self) -> dict[str, Any]:
        return self.config.describe(self.id)

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
        itn, digits = config.itn, config.itn_digits
        if transcription is not None:
            if not isinstance(transcription, dict):
                raise ClientError("invalid_value", "audio.input.transcription must be an object", "transcription")
            name, lang = str(transcription.get("model") or ""), str(transcription.get("language") or "")
            if name or lang:
                model = self.policy.model(name, lang)
                language = lang or model.language
            # extra fields (OpenAI has none for it): the written form of `completed` transcripts
            if "itn" in transcription:
                itn = transcription["itn"]
                if itn is not None and not isinstance(itn, bool):
                    raise ClientError("invalid_value", "transcription.itn must be true, false or null", "itn")
            if "itn_digits" in transcription:
                digits = str(transcription["itn_digits"] or "")
        writing = self.policy.writing(model, itn, digits)
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
        self.streams.check(model)  # a model without streaming graphs is refused here
        if fmt != config.fmt:
            self.resampler = Resampler(fmt.rate, model.manifest.sample_rate)
        if model is not config.model:
            self.rate = model.manifest.sample_rate
        self.config = SessionConfig(model, language, fmt, turn, logprobs, itn, digits, writing)
        if turn != config.turn:
            self._new_turns()
        await self.send({"type": "session.updated", "event_id": event_id(), "session": self.describe()})

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
        samples = decode_pcm(data, self.config.fmt.kind)
        metrics.REALTIME_AUDIO_SECONDS.labels(model=self.config.model.name).inc(samples.shape[0] / self.config.fmt.rate)
        await self._audio(self.resampler.push(samples))

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
        if self.turns is not None:
            self.turns.end_turn()
        await self._complete()

    def _clear(self) -> None:
        self.utterance, self.odd_byte = None, b""
        if self.config.turn is not None:
            self._new_turns()

    # -------------------------------------------------------------------------------------- audio

    def _new_turns(self) -> None:
        turn = self.config.turn
        self.turns = self.streams.turns(turn, self.rate, self.position) if turn is not None else None

    async def _audio(self, samples: npt.NDArray[np.float32]) -> None:
        """New audio at the model's rate: through turn detection (server_vad) into the utterance, or straight in."""
        self.position += samples.shape[0]
        if self.turns is None:  # explicit commits: everything is the utterance
            if self.utterance is None:
                self._begin()
            await self._feed(samples)
            return
        for happened in await self.turns.push(samples):
            if isinstance(happened, SpeechStarted):
                utterance = self._begin()
                started = {"type": "input_audio_buffer.speech_started", "event_id": event_id()}
                await self.send({**started, "item_id": utterance.item_id, "audio_start_ms": self._ms(happened.start)})
            elif isinstance(happened, Speech):
                await self._feed(happened.samples)
            elif isinstance(happened, SpeechStopped):
                stopped = {"type": "input_audio_buffer.speech_stopped", "event_id": event_id()}
                item = self.utterance.item_id if self.utterance else ""
                await self.send({**stopped, "item_id": item, "audio_end_ms": self._ms(happened.end)})
                await self._complete()

    def _ms(self, samples: int) -> int:
        return int(samples * 1000 // self.rate)

    def _begin(self) -> Utterance:
        self.items += 1
        item_id = f"item_{self.id[5:17]}_{self.items:04d}"
        self.utterance = self.streams.utterance(item_id, self.config.model)
        return self.utterance

    async def _feed(self, samples: npt.NDArray[np.float32]) -> None:
        u = self.utterance
        if u is not None:
            await self._delta(u, await u.feed(samples))

    async def _delta(self, u: Utterance, delta: Delta | None) -> None:
        if delta is None:
            return
        event = {
            "type": "conversation.item.input_audio_transcription.delta",
            "event_id": event_id(),
            "item_id": u.item_id,
            "content_index": 0,
            "delta": delta.text,
        }
        if self.config.logprobs:
            event["logprobs"] = self._logprobs(u, delta.first_step)
        await self.send(event)

    def _logprobs(self, u: Utterance, first: int = 0) -> list[dict[str, Any]]:
        """Emitted tokens from the `first` on: each one's text and the log-probability of the output step that
        emitted it (OpenAI's LogProbProperties)."""
        out = []
        manifest = u.model.manifest
        for token, logprob in u.steps[first:]:
            piece = manifest.vocabulary[token].replace(manifest.tokenizer.word_marker, " ")
            out.append({"token": piece, "logprob": round(logprob, 6), "bytes": list(piece.encode("utf-8"))})
        return out

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
        await self._delta(u, await u.finish())
        event = {
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": event_id(),
            "item_id": u.item_id,
            "content_index": 0,
            "transcript": u.text if self.config.writing is None else await self.config.writing.text_async(u.text),
            "usage": {"type": "duration", "seconds": round(u.samples / self.rate, 3)},
        }
        if self.config.logprobs:
            event["logprobs"] = self._logprobs(u)
        await self.send(event)
