"""BentoML glue: the entry service (public API) and the recognizer (owns the session, batches).

Everything else lives in plain modules: audio.py (decoding), segment.py, recognizer.py (ORT + greedy CTC),
transcript.py (text, spans and word times), formats.py, openai_api.py (the /v1 routes), http.py (request
guard), errors.py, settings.py, manifest.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp
import bentoml
import numpy as np
from starlette.responses import JSONResponse, PlainTextResponse

from service.errors import ASRError, AudioTooShort, NotReady, Overloaded, RecognizerUnavailable
from service.formats import ResponseFormat, render
from service.http import FormRoute, RequestGuard
from service.openai_api import OPENAI_FIELDS, openai_app
from service.recognizer import SegmentResult
from service.schemas import SegmentSpan, Transcription, Word
from service.settings import Settings
from service.transcript import Transcript


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena; BentoML's thread pools and ONNX Runtime's
    varying tensor shapes then fragment ~300 MB more per worker (measured: recognizer RSS 1,135 MB -> 893 MB
    after 512 requests). Same effect as MALLOC_ARENA_MAX=2, which would be read too late from here."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name and "musl" not in name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).mallopt(-8, arenas)  # M_ARENA_MAX


_limit_malloc_arenas()
SETTINGS = Settings.from_env()
# The model: ASR_MODEL when set; else the one a bento was built for (`bentoml build --arg model=TAG`, kept in
# the bento); else the default. At class scope, so that `bentoml build` records (and containers carry) it.
MODEL_TAG = SETTINGS.model if "ASR_MODEL" in os.environ else getattr(bentoml.use_arguments(), "model", SETTINGS.model)
MODEL = bentoml.models.BentoModel(MODEL_TAG)
log = logging.getLogger("asr")


@bentoml.service(
    name="asr_recognizer",
    # Only the recognizer asks for a GPU; BentoML then sets CUDA_VISIBLE_DEVICES for its worker.
    resources={"gpu": 1} if SETTINGS.device != "cpu" else {},
    workers=1,
    traffic={"timeout": SETTINGS.timeout_s},
    # BentoML 1.4.39 renews the caller's connection session every `max_requests` calls or `max_age` seconds
    # by closing it while other calls are still in flight on it (_bentoml_impl/client/proxy2.py,
    # get_session): under concurrent load those calls die with "Server disconnected". The recognizer is
    # local (a Unix socket); never renew.
    runner_connection={"max_requests": 2**62, "max_age": 1e12},
)
class Recognizer:
    model = MODEL

    def __init__(self) -> None:
        from service.manifest import Manifest
        from service.recognizer import Recognizer as Engine

        directory = Path(self.model.path)
        try:
            manifest = Manifest.read(directory)
            self.engine = Engine(directory, manifest, SETTINGS.device, SETTINGS.ort_threads, SETTINGS.variant)
        except Exception as exc:
            # One clear line before BentoML logs the traceback; the service never turns ready.
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            log.error(
                "cannot load model %s (%s): %s; re-export it with `python -m export`", MODEL_TAG, directory, reason
            )
            raise
        if not self.engine.not_ready_reason:
            self.engine.warmup()
        log.info("recognizer ready=%s providers=%s", not self.engine.not_ready_reason, self.engine.providers)

    def __is_ready__(self) -> bool:
        return not self.engine.not_ready_reason

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.batch_max_size, max_latency_ms=SETTINGS.batch_max_latency_ms)
    def infer(self, segments: list[np.ndarray]) -> list[SegmentResult]:
        return self.engine.infer(segments)

    @bentoml.api
    def status(self) -> dict[str, Any]:
        return {
            "ready": not self.engine.not_ready_reason,
            "reason": self.engine.not_ready_reason,
            "providers": self.engine.providers,
        }


@bentoml.asgi_app(openai_app, path="/v1")
@bentoml.service(
    name="asr",
    # RequestGuard enforces ASR_TIMEOUT_S and ASR_MAX_CONCURRENCY with our error bodies; BentoML's own
    # limits are a looser backstop for the other routes.
    traffic={"timeout": SETTINGS.timeout_s + 30, "max_concurrency": SETTINGS.max_concurrency * 2},
)
class Transcriber:
    recognizer = bentoml.depends(Recognizer)
    model = MODEL

    def __init__(self) -> None:
        from service.audio import Limits
        from service.manifest import Manifest
        from service.tokens import Detokenizer

        self.manifest = Manifest.read(Path(self.model.path))
        self.tag = str(self.model.tag)
        self.detok = Detokenizer(self.manifest.vocabulary, self.manifest.tokenizer)
        self.limits = Limits(
            SETTINGS.min_duration_s,
            SETTINGS.max_duration_s,
            SETTINGS.formats,
            SETTINGS.require_sample_rate,
            SETTINGS.require_mono,
        )
        self._recognizer_ready = False  # cached once true: a loaded provider does not go away
        model_limit = self.manifest.max_segment_samples
        wanted = int(SETTINGS.segment_s * self.manifest.sample_rate) if SETTINGS.segment_s else model_limit
        self.segment_samples = min(wanted, model_limit)

    async def __is_ready__(self) -> bool:
        return (await self._recognizer_status())["ready"] is True

    async def _recognizer_status(self) -> dict[str, Any]:
        import anyio

        try:
            with anyio.fail_after(5):  # a recognizer that cannot start must not hang readiness probes
                status: dict[str, Any] = await self.recognizer.to_async.status()
        except Exception:
            reason = "the recognizer does not answer (is the model loadable? the server log says why)"
            status = {"ready": False, "reason": reason, "providers": []}
        self._recognizer_ready = status["ready"] is True
        return status

    @bentoml.api
    async def transcribe(
        self, audio: Path, timestamps: bool = False, response_format: ResponseFormat = "json"
    ) -> Transcription:
        """Transcribe one audio file (multipart field `audio`): WAV, FLAC, OGG Vorbis/Opus, MP3, any rate and
        channel count. `timestamps=true` adds words with start/end seconds and confidence.
        `response_format`: json (this schema), text, srt or vtt."""
        import anyio

        try:
            transcript = await self.run(await anyio.Path(audio).read_bytes())
        except ASRError as exc:  # (RequestGuard adds Retry-After to 503s)
            return JSONResponse(exc.body(), status_code=int(exc.status))  # type: ignore[return-value]
        if response_format != "json":
            return PlainTextResponse(render(transcript, response_format))  # type: ignore[return-value]
        words = [Word(**vars(w)) for w in transcript.words] if timestamps else None
        return Transcription(
            text=transcript.text,
            duration_s=round(transcript.duration_s, 3),
            model=self.tag,
            language=self.manifest.language,
            segments=[SegmentSpan(start=s.start, end=s.end, text=s.text) for s in transcript.segments],
            words=words,
        )

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        """The model served, its providers and readiness (with the reason when not ready)."""
        return {"model": self.tag, "language": self.manifest.language, **(await self._recognizer_status())}

    async def run(self, data: bytes) -> Transcript:
        """Bytes of an audio file -> transcript: decode, cut, recognise (batched), assemble."""
        import anyio

        from service.audio import decode
        from service.segment import split
        from service.transcript import assemble

        if not self._recognizer_ready:
            status = await self._recognizer_status()
            if not status["ready"]:
                raise NotReady(f"the service is not ready: {status['reason']}")
        rate = self.manifest.sample_rate
        decoded = await anyio.to_thread.run_sync(decode, data, rate, self.limits)
        if decoded.samples.shape[0] < self.manifest.frame_shift_s * rate:
            shift_ms = self.manifest.frame_shift_s * 1000
            raise AudioTooShort(
                f"audio lasts {decoded.duration_s * 1000:.1f} ms, less than one model step ({shift_ms:g} ms)"
            )
        segments = split(decoded.samples, self.segment_samples, rate, SETTINGS.min_pause_s)
        try:
            raw = await self.recognizer.to_async.infer([s.samples for s in segments])
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            # The recognizer process died (and is being restarted by BentoML's arbiter): retryable.
            log.warning("recognizer call failed: %r", exc)
            raise RecognizerUnavailable("the recognizer restarted while transcribing; retry shortly") from exc
        except bentoml.exceptions.BentoMLException as exc:
            # The batch queue refuses work it cannot finish within its latency bound (503 "overloaded");
            # through the dependency call it arrives as an exception, not a status.
            if getattr(exc, "error_code", None) == 503 or "overload" in str(exc).lower():
                raise Overloaded("the recognizer is overloaded; retry shortly") from exc
            raise
        results = [r if isinstance(r, SegmentResult) else SegmentResult.model_validate(r) for r in raw]
        return assemble(segments, results, self.detok, self.manifest.frame_shift_s, rate, decoded.duration_s)


Transcriber.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    max_body=SETTINGS.max_upload_bytes,
    routes={
        "/transcribe": FormRoute("audio", frozenset({"audio", "timestamps", "response_format"})),
        "/v1/audio/transcriptions": FormRoute("file", OPENAI_FIELDS, style="openai", allow_unknown=True),
    },
    max_concurrency=SETTINGS.max_concurrency,
    timeout_s=SETTINGS.timeout_s,
)
