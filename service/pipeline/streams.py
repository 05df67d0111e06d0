"""Stream transcription: a turn's audio as it arrives -> NeMo's buffered CTC (service/recognition/streaming.py;
every stream's buffers share the model's batch queue) -> text that grows (deltas) -> the turn's transcript."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.audio.vad import SileroVAD
from service.catalog import ServedModel
from service.pipeline.client import Recognition, RecognizerError
from service.pipeline.threads import CpuThreads
from service.pipeline.turns import TurnDetection, TurnDetector
from service.recognition.streaming import BufferedCTC, FrontEnd, Geometry, StreamingUnsupported, frontend_runner

log = logging.getLogger("asr")
STREAMING_RATE = 16000  # the VAD that finds turns hears 16 kHz


@dataclass(frozen=True)
class StreamSettings:
    sessions: int = 16  # ASR_REALTIME_SESSIONS: 0 turns streaming off
    chunk_s: float = 0.0  # ASR_STREAM_CHUNK_S / ASR_STREAM_BUFFER_S; 0: what the export verified
    buffer_s: float = 0.0


class RecognizerFailed(Exception):
    """The recognizer could not run a stream's buffers (it died, or ONNX Runtime failed)."""


class StreamTranscription:
    """What every stream of this process shares: each model's streaming geometry and front end (made once), the
    VAD, the CPU threads and the recognizer."""

    def __init__(
        self,
        recognition: Recognition,
        threads: CpuThreads,
        directories: dict[str, Path],
        settings: StreamSettings,
        vad: SileroVAD | None = None,
    ) -> None:
        self.recognition, self.threads, self.directories, self.settings = recognition, threads, directories, settings
        self._vad = vad
        self._models: dict[str, tuple[Geometry, FrontEnd]] = {}

    def vad(self) -> SileroVAD:
        """The Silero VAD session (the file pipeline's when it has one, else made here on first use)."""
        if self._vad is None:
            self._vad = SileroVAD()
        return self._vad

    def check(self, served: ServedModel) -> None:
        """StreamingUnsupported when the model has no streaming graphs, is not at 16 kHz, or streaming is off."""
        self.front(served)

    def front(self, served: ServedModel) -> tuple[Geometry, FrontEnd]:
        """The model's streaming geometry and its front end (an ONNX Runtime session in this process, made once)."""
        if served.name not in self._models:
            if self.settings.sessions == 0:
                raise StreamingUnsupported("streaming is off on this server (ASR_REALTIME_SESSIONS=0)")
            rate = served.manifest.sample_rate
            if rate != STREAMING_RATE:
                why = f"model {served.name} runs at {rate} Hz: streaming serves 16 kHz models (its VAD hears 16 kHz)"
                raise StreamingUnsupported(why)
            geometry = Geometry.of(served.manifest, self.settings.chunk_s, self.settings.buffer_s)
            import onnxruntime as ort

            assert served.manifest.streaming is not None  # Geometry.of checked
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            path = str(self.directories[served.name] / served.manifest.streaming.frontend_file)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self._models[served.name] = (geometry, frontend_runner(session))
        return self._models[served.name]

    def turns(self, turn: TurnDetection, rate: int, position: int) -> TurnDetector:
        return TurnDetector(turn, self.vad(), rate, position, self.threads)

    def utterance(self, item_id: str, served: ServedModel) -> Utterance:
        return Utterance(item_id, served, self)

    async def recognize(self, served: ServedModel, buffers: list[npt.NDArray[np.float32]]) -> list[Any]:
        """Buffers through the model's streaming batch queue (shared with every other stream); an empty result
        per buffer when the recognizer cannot run them."""
        try:
            out = await self.recognition.run(served, buffers, served.stream_method)
        except RecognizerError as exc:
            # the recognizer restarted, or its queue is past its latency bound: the session ends with an error
            # event, its client reconnects
            log.warning("recognizer call for a stream failed: %r", exc)
            return [np.zeros((0, 2), np.float32)] * len(buffers)
        return [np.asarray(r, dtype=np.float32) for r in out]


@dataclass(frozen=True)
class Delta:
    text: str  # what the transcript gained
    first_step: int  # the first emitted token (index into Utterance.steps) behind it


class Utterance:
    """One turn's audio through buffered CTC; the text handed out so far."""

    def __init__(self, item_id: str, model: ServedModel, streams: StreamTranscription) -> None:
        geometry, frontend = streams.front(model)
        self.item_id, self.model, self.streams = item_id, model, streams
        self.ctc = BufferedCTC(geometry, frontend, model.manifest.blank_id)
        self.samples = 0
        self.sent = ""  # text handed out in deltas so far
        self.steps_sent = 0  # emitted tokens behind those deltas

    @property
    def text(self) -> str:
        return self.model.detok.text(self.ctc.tokens)

    @property
    def steps(self) -> list[tuple[int, float]]:
        """Each emitted token and the log-probability of the output step that emitted it."""
        return self.ctc.steps

    async def feed(self, samples: npt.NDArray[np.float32]) -> Delta | None:
        """The turn's next audio (at the model's rate): the text it added, if any."""
        if samples.shape[0] == 0:
            return None
        self.samples += samples.shape[0]
        return await self._advance(await self.streams.threads.run(self.ctc.feed, samples))

    async def finish(self) -> Delta | None:
        """The turn's last buffers (the audio is complete): the text they added, if any."""
        return await self._advance(await self.streams.threads.run(self.ctc.finish))

    async def _advance(self, buffers: list[npt.NDArray[np.float32]]) -> Delta | None:
        if not buffers:
            return None
        for result in await self.streams.recognize(self.model, buffers):
            if result.shape[0] == 0:
                raise RecognizerFailed("the model could not run on this stream; the server log has the details")
            self.ctc.take(result[:, 0].astype(np.int64), result[:, 1])
        text = self.text
        if not (text.startswith(self.sent) and len(text) > len(self.sent)):
            return None
        delta = Delta(text[len(self.sent) :], self.steps_sent)
        self.sent, self.steps_sent = text, len(self.ctc.steps)
        return delta
