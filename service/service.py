"""BentoML wiring: the recognizer service (owns one ONNX Runtime session per model, a batch API per model and
kind) and the entry service (the doors, over the pipeline). docs/architecture.md has the map: api/ (doors,
middleware), pipeline/ (files, streams, turns, policy), recognition/ (sessions, lanes, decoders), audio/."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, TypeVar

import anyio
import bentoml
import numpy as np

from service import metrics, patches
from service.api import openai_api, openapi, transcribe
from service.api.disconnect import AbandonedCallLog, CancelOnDisconnect
from service.api.formats import ResponseFormat
from service.api.forms import FormRoute
from service.api.guard import RequestGuard
from service.api.realtime import SessionLimits
from service.api.requestlog import REQUEST_LOG
from service.api.schemas import Transcription
from service.audio.decode import Limits
from service.audio.vad import SileroVAD
from service.catalog import Catalog, ServedModel, missing_variant, segment_samples
from service.manifest import Manifest
from service.pipeline.client import Readiness, Recognition
from service.pipeline.files import FileSettings, FileTranscription
from service.pipeline.policy import DecodingRules, Policy
from service.pipeline.streams import StreamSettings, StreamTranscription
from service.pipeline.threads import CpuThreads
from service.recognition.beam import MissingDecoder, beam_pool
from service.recognition.lanes import Cores
from service.recognition.recognizer import Recognizer, SegmentResult
from service.remote import RemoteRecognizer
from service.settings import Settings, SettingsError

log = logging.getLogger("asr")
T = TypeVar("T")


def _fail(message: str) -> None:
    """Stop the start with one clear line (instead of a traceback, or BentoML's schema error naming its own
    config keys rather than the ASR_* setting the user wrote)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


# At import, in every process: BentoML builds its batch queues with the app, before any service instance exists
# (a patch applied later is lost), and a setting that cannot work must stop `bentoml serve` in the process that
# imports this module to find the services, not in workers BentoML would restart forever.
try:
    patches.apply()
    SETTINGS = Settings.from_env()
except (SettingsError, patches.PatchMismatch) as _exc:
    _fail(str(_exc))
# At class scope (below), so that `bentoml build` records (and containers carry) every model.
MODELS = [bentoml.models.BentoModel(tag) for tag in SETTINGS.served_tags(bentoml.use_arguments())]
if _missing := missing_variant(SETTINGS.variant, MODELS):
    _fail(_missing)


def _method(index: int, kind: str = "infer") -> str:
    """Model `index`'s batch API of `kind`, named after the model (BentoML labels its batching metrics with it):
    infer_ (greedy results), logprobs_ (for beam search), stream_ (streaming buffers); each its own queue."""
    name = re.sub(r"\W", "_", str(MODELS[index].tag).split(":")[0])
    return f"{kind}_{name}"


def _with_models(cls: type[T]) -> type[T]:
    for index, model in enumerate(MODELS):  # resolved to store entries on instance access
        setattr(cls, f"model_{index}", model)
    return cls


def _entries(service: Any) -> list[Any]:
    return [getattr(service, f"model_{index}") for index in range(len(MODELS))]


def _batch_api(index: int, kind: str) -> Callable[..., Any]:
    """Model `index`'s batch API of `kind`: results one per item; failed items are empty arrays (or carry
    `error`), counted in asr_recognizer_segments by outcome."""

    def run(self: Any, items: list[np.ndarray]) -> list[Any]:
        engine: Recognizer = self.engines[index]
        results: list[Any] = getattr(engine, kind)(items)
        failed = sum(1 for r in results if (r.error if isinstance(r, SegmentResult) else r.shape[0] == 0))
        outcomes = metrics.SEGMENTS_RUN.labels
        if failed:
            outcomes(model=engine.manifest.name, outcome="failed").inc(failed)
        outcomes(model=engine.manifest.name, outcome="run").inc(len(results) - failed)
        return results

    run.__name__ = run.__qualname__ = _method(index, kind)
    # BentoML reads the batch type from the annotations: greedy results, or arrays
    run.__annotations__["return"] = list[SegmentResult] if kind == "infer" else list[np.ndarray]
    return bentoml.api(  # type: ignore[no-any-return]
        batchable=True, max_batch_size=SETTINGS.batch_max_size, max_latency_ms=SETTINGS.batch_max_latency_ms
    )(run)


def _with_batch_apis(cls: type[T]) -> type[T]:
    for index in range(len(MODELS)):
        for kind in ("infer", "logprobs", "stream"):
            setattr(cls, _method(index, kind), _batch_api(index, kind))
    return cls


# as many batches in flight, and threads to run them, as lanes: a lane that frees takes the next segment at once
patches.concurrent_batches = CPU_LANES = SETTINGS.recognizer_lanes()
patches.on_dropped = metrics.SEGMENTS_DROPPED.inc
patches.known_paths.update(  # what the service answers (BentoML's HTTP metrics count any other path as "other")
    {"/", "/docs.json", "/schema.json", "/readyz", "/livez", "/healthz", "/metrics", "/transcribe", "/status"}
    | {"/v1/audio/transcriptions", "/v1/models", "/v1/models/", "/static_content/", "/v1/realtime"}
    | {f"/{_method(i, kind)}" for i in range(len(MODELS)) for kind in ("infer", "logprobs", "stream")}
)


@bentoml.service(
    name="asr_recognizer",
    threads=CPU_LANES,
    logging={"access": {"enabled": False}},  # a line per batch call says nothing the entry's request lines miss
    # Only the recognizer asks for a GPU; BentoML then sets CUDA_VISIBLE_DEVICES for its worker.
    resources={"gpu": 1} if SETTINGS.device != "cpu" else {},
    workers=1,
    traffic={"timeout": SETTINGS.timeout_s},
    # BentoML 1.4.39 renews the caller's connection session every `max_requests` calls or `max_age` seconds by
    # closing it while other calls are still in flight on it (_bentoml_impl/client/proxy2.py, get_session): those
    # calls die with "Server disconnected". The recognizer is local (a Unix socket): never renew.
    runner_connection={"max_requests": 2**62, "max_age": 1e12},
)
@_with_batch_apis
@_with_models
class RecognizerService:
    """One ONNX Runtime session per served model, in one process (docs/benchmarks.md has the memory figures)."""

    def __init__(self) -> None:
        self.engines: list[Recognizer] = []
        cores = Cores(SETTINGS.lanes) if SETTINGS.lanes > 1 else None  # every CPU run of every model (lanes.py)
        for model in _entries(self):
            directory = Path(model.path)
            try:
                manifest = Manifest.read(directory)
                engine = Recognizer(
                    directory,
                    manifest,
                    SETTINGS.device,
                    SETTINGS.ort_threads,
                    SETTINGS.variant,
                    SETTINGS.device_options,
                    segment_samples(manifest, SETTINGS.segment_s),
                    streaming=SETTINGS.realtime_sessions > 0,
                    lanes=SETTINGS.lanes,
                    cores=cores,
                )
            except Exception as exc:  # one clear line before BentoML's traceback; the service never turns ready
                reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                advice = "re-export it with `python -m export`"
                log.error("cannot load model %s (%s): %s; %s", model.tag, directory, reason, advice)
                raise
            if not engine.not_ready_reason:
                engine.warmup()
            self.engines.append(engine)
        log.info("recognizer ready=%s providers=%s", self._ready(), [e.providers for e in self.engines])

    def _ready(self) -> bool:
        return not any(e.not_ready_reason for e in self.engines)

    async def __is_ready__(self) -> bool:
        return self._ready()

    # async: answered on the event loop, never queued behind inference (sync APIs share BentoML's thread
    # limiter with the batch runs: under load a status call waited for seconds and readiness flapped)
    @bentoml.api
    async def status(self) -> dict[str, Any]:
        reason = next((e.not_ready_reason for e in self.engines if e.not_ready_reason), "")
        return {
            "ready": self._ready(),
            "reason": reason,
            "permanent": not self._ready(),  # a model loaded without the device it was told to demand stays so
            "providers": self.engines[0].providers,
            "gpu": any(e.on_gpu for e in self.engines),  # the entry sizes a request's segments in flight by it
            "models": [
                {"providers": e.providers, "graph": e.graph_file, "variant": SETTINGS.variant or "fp32"}
                for e in self.engines
            ],
        }


RecognizerService.add_asgi_middleware(CancelOnDisconnect)  # type: ignore[attr-defined]
# BentoML logs each call cancelled that way as an ERROR with two tracebacks; the request's own line says it.
logging.getLogger("bentoml._internal.server.http_app").addFilter(AbandonedCallLog())
READINESS = Readiness()  # what the entry last learnt of the recognizer; /readyz answers with it


def _context(ctx: Any) -> tuple[Any, str, str]:
    """The request's state, its media type (a parent service that depends on this one by import sends its
    arguments pickled) and User-Agent (BentoML's clients and proxies say who they are)."""
    if ctx is None:
        return SimpleNamespace(), "", ""
    headers = ctx.request.headers
    return ctx.request.state, str(headers.get("content-type", "")), str(headers.get("user-agent", ""))


@bentoml.asgi_app(openai_api.openai_app, path="/v1")
@bentoml.service(
    name="asr",
    logging={"access": {"enabled": False}},  # the request guard logs one line per request, with its request id
    # The request guard enforces ASR_TIMEOUT_S and ASR_MAX_CONCURRENCY with our error bodies; BentoML's own
    # limits are a looser backstop for the other routes.
    traffic={"timeout": SETTINGS.timeout_s + 30, "max_concurrency": SETTINGS.max_concurrency * 2},
    workers=SETTINGS.entry_processes(),
)
@_with_models
class Transcriber:
    recognizer = bentoml.depends(RecognizerService)

    def __init__(self) -> None:
        s, entries = SETTINGS, _entries(self)
        catalog = Catalog([ServedModel.from_store(e, _method(i), s.segment_s) for i, e in enumerate(entries)])
        self.policy = Policy(catalog, DecodingRules(s.decoding, s.hotword_weight, s.max_hotwords, s.max_hotword_words))
        client = RemoteRecognizer(lambda: self.recognizer)
        self.recognition = Recognition(client, READINESS, s.batch_max_size, gpu=s.device == "cuda")
        threads, vad = CpuThreads(), SileroVAD() if s.segmenter == "vad" else None
        limits = Limits(
            s.min_duration_s, s.max_duration_s, s.formats, s.require_sample_rate, s.require_mono, s.max_decoded_mb
        )
        models = [(m.name, m.tag, m.manifest, Path(e.path)) for m, e in zip(catalog.models, entries, strict=True)]
        try:  # beam search's decoders, in their own processes (started at the first beam request, or now)
            beams = beam_pool(models, s.beam_workers)
        except MissingDecoder as exc:
            _fail(str(exc))
        if s.decoding == "beam":
            beams.start()
        self.files = FileTranscription(
            self.recognition, limits, vad, threads, beams, FileSettings(s.vad_pad_s, s.min_pause_s, s.beam_width)
        )
        directories = {name: path for name, _, _, path in models}
        streaming = StreamSettings(s.realtime_sessions, s.stream_chunk_s, s.stream_buffer_s)
        self.streams = StreamTranscription(self.recognition, threads, directories, streaming, vad)
        self.realtime_limits = SessionLimits(s.realtime_sessions, s.realtime_max_s, s.realtime_idle_s)
        REQUEST_LOG.disabled = False  # under BentoML's logging set-up, done before this runs
        REQUEST_LOG.setLevel(logging.INFO)

    async def __is_ready__(self) -> bool:
        return (await self.recognition.status())["ready"] is True

    @bentoml.api
    async def transcribe(
        self,
        audio: Path,
        timestamps: bool = False,
        response_format: ResponseFormat = "json",
        model: str = "",
        language: str = "",
        decoding: Literal["default", "greedy", "beam"] = "default",
        hotwords: str = "",
        ctx: bentoml.Context = None,  # type: ignore[assignment]  # BentoML passes it; not a form field
    ) -> Transcription | str:
        """Transcribe one audio file (multipart field `audio`): WAV, FLAC, OGG Vorbis/Opus, MP3, M4A/MP4 AAC,
        WebM Opus, AAC, AMR, ...; any rate from 1 to 384 kHz, 1 to 64 channels. `timestamps=true` adds words
        with start/end seconds and confidence. `response_format`: json (the Transcription schema), text, srt or
        vtt. `model` (a served name) and/or `language` (ISO 639-1, e.g. hi) choose among the served models;
        neither: the first one. `decoding`: greedy (exactly NeMo's) or beam (CTC beam search, with the model's
        n-gram LM if it has one); default: the server's ASR_DECODING. `hotwords`: `phrase[:weight], ...` to
        favour (a negative weight disfavours); they imply beam search."""
        fields = transcribe.TranscribeFields(
            timestamps=timestamps,
            response_format=response_format,
            model=model,
            language=language,
            decoding=decoding,
            hotwords=hotwords,
        )
        state, media, agent = _context(ctx)
        answer = await transcribe.transcribe(self, await anyio.Path(audio).read_bytes(), fields, state, media, agent)
        if ctx is not None and not isinstance(answer, Transcription):
            ctx.response.status_code = answer.status_code  # with a ctx parameter, BentoML sets the status from it
        return answer  # type: ignore[return-value]

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        """The models served (the first is the default), the providers and readiness (with the reason when
        not ready)."""
        default = self.policy.catalog.default
        status = await self.recognition.status()
        running = status.pop("models", [])
        models = [
            {**m.describe(), **(running[i] if i < len(running) else {"providers": [], "ready": False})}
            for i, m in enumerate(self.policy.catalog.models)
        ]
        return {"model": default.tag, "language": default.language, **status, "models": models}


openapi.install(Transcriber)  # /docs.json and the bento's apis/openapi.yaml: service/api/openapi.py
Transcriber.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    max_body=SETTINGS.max_upload_bytes,
    routes={
        "/transcribe": FormRoute(transcribe.FILE_FIELD, transcribe.answer_form, transcribe.FIELDS),
        "/v1/audio/transcriptions": FormRoute(
            openai_api.FILE_FIELD, openai_api.answer_form, openai_api.OPENAI_FIELDS, "openai", allow_unknown=True
        ),
    },
    max_concurrency=SETTINGS.max_concurrency,
    timeout_s=SETTINGS.timeout_s,
    readiness=READINESS,
)
