"""BentoML wiring: the recognizer service (owns one ONNX Runtime session per model, a batch API per model and
kind) and the entry service (the doors, over the pipeline). docs/architecture.md has the map: api/ (doors,
middleware), pipeline/ (files, streams, turns, policy), recognition/ (sessions, lanes, decoders), audio/."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import anyio
import bentoml
import numpy as np

from service import metrics, patches
from service.api import openai_api, openapi, page, transcribe
from service.api.access import cors, open_paths
from service.api.disconnect import AbandonedCallLog, CancelOnDisconnect
from service.api.formats import ResponseFormat
from service.api.guard import Access, RequestGuard
from service.api.keys import KeysError
from service.api.requestlog import REQUEST_LOG
from service.api.schemas import Transcription
from service.catalog import start_problem
from service.components import engines_status, entry_parts, guard_options, key_store, load_engines, served_paths
from service.pipeline.client import Readiness
from service.recognition.recognizer import Recognizer, SegmentResult
from service.remote import RemoteRecognizer
from service.settings import Settings, SettingsError

log = logging.getLogger("asr")
T = TypeVar("T")
BATCH_KINDS = ("infer", "logprobs", "stream")  # greedy results, log-probabilities for beam search, streams' buffers


def _fail(message: str) -> None:
    """Stop the start with one clear line (instead of a traceback, or BentoML's schema error naming its own
    config keys rather than the ASR_* setting the user wrote)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


# At import, in every process: BentoML builds its batch queues with the app, before any service instance exists
# (a patch applied later is lost), and a setting that cannot work must stop `bentoml serve` in the process that
# imports this module to find the services, not in workers BentoML would restart forever.
patches.apply(announce=bentoml.server_context.worker_index is None)  # a skipped patch is said once, at start
try:
    SETTINGS = Settings.from_env()
except SettingsError as _exc:
    _fail(str(_exc))
# At class scope (below), so that `bentoml build` records (and containers carry) every model.
MODELS = [bentoml.models.BentoModel(tag) for tag in SETTINGS.served_tags(bentoml.use_arguments())]
if _problem := start_problem([str(m.tag) for m in MODELS], SETTINGS.variant, MODELS):
    _fail(_problem)
try:
    KEYS = key_store(SETTINGS, announce=bentoml.server_context.worker_index is None)
except KeysError as _exc:
    _fail(str(_exc))


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
        for kind in BATCH_KINDS:
            setattr(cls, _method(index, kind), _batch_api(index, kind))
    return cls


# as many batches in flight, and threads to run them, as lanes: a lane that frees takes the next segment at once
patches.concurrent_batches = CPU_LANES = SETTINGS.recognizer_lanes()
patches.on_dropped = metrics.SEGMENTS_DROPPED.inc
patches.known_paths.update(served_paths([_method(i, kind) for i in range(len(MODELS)) for kind in BATCH_KINDS]))


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
        self.engines = load_engines(SETTINGS, _entries(self))
        log.info("recognizer ready=%s providers=%s", self.status_now()["ready"], [e.providers for e in self.engines])

    def status_now(self) -> dict[str, Any]:
        return engines_status(self.engines, SETTINGS.variant)

    async def __is_ready__(self) -> bool:
        return bool(self.status_now()["ready"])

    # async: answered on the event loop, never queued behind inference (sync APIs share BentoML's thread
    # limiter with the batch runs: under load a status call waited for seconds and readiness flapped)
    @bentoml.api
    async def status(self) -> dict[str, Any]:
        return self.status_now()


RecognizerService.add_asgi_middleware(CancelOnDisconnect)  # type: ignore[attr-defined]
if patches.applied("quiet_abandoned_calls"):  # BentoML logs each call cancelled that way with two tracebacks
    logging.getLogger("bentoml._internal.server.http_app").addFilter(AbandonedCallLog())
READINESS = Readiness()  # what the entry last learnt of the recognizer; /readyz answers with it


@bentoml.asgi_app(page.page_app, path="/ui")
@bentoml.asgi_app(openai_api.openai_app, path="/v1")
@bentoml.service(
    name="asr",
    logging={"access": {"enabled": False}},  # the request guard logs one line per request, with its request id
    # The request guard enforces ASR_TIMEOUT_S and ASR_MAX_CONCURRENCY with our error bodies; BentoML's own
    # limits are a looser backstop for the other routes.
    traffic={"timeout": SETTINGS.timeout_s + 30, "max_concurrency": SETTINGS.max_concurrency * 2},
    workers=SETTINGS.entry_processes(),
    **cors(SETTINGS.cors_origins),
)
@_with_models
class Transcriber:
    recognizer = bentoml.depends(RecognizerService)

    def __init__(self) -> None:
        methods = [_method(index) for index in range(len(MODELS))]
        client = RemoteRecognizer(lambda: self.recognizer)
        parts = entry_parts(SETTINGS, _entries(self), methods, client, READINESS)
        self.policy, self.recognition, self.files = parts.policy, parts.recognition, parts.files
        self.streams, self.realtime_limits = parts.streams, parts.realtime_limits
        self.jobs = parts.jobs
        REQUEST_LOG.disabled = False  # under BentoML's logging set-up, done before this runs
        REQUEST_LOG.setLevel(logging.INFO)

    async def __is_ready__(self) -> bool:
        return (await self.recognition.status())["ready"] is True

    @bentoml.on_startup
    async def _start_jobs(self) -> None:
        self.jobs.start()

    @bentoml.on_shutdown
    async def _stop_jobs(self) -> None:
        await self.jobs.stop()

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
        itn: bool | None = None,
        itn_digits: Literal["default", "devanagari", "latin"] = "default",
        ctx: bentoml.Context = None,  # type: ignore[assignment]  # BentoML passes it; not a form field
    ) -> Transcription | str:
        """Transcribe one audio file (multipart field `audio`): WAV, FLAC, OGG Vorbis/Opus, MP3, M4A/MP4 AAC,
        WebM Opus, AAC, AMR, ...; any rate from 1 to 384 kHz, 1 to 64 channels. `timestamps=true` adds words
        with start/end seconds and confidence. `response_format`: json (the Transcription schema), text, srt or
        vtt. `model` (a served name) and/or `language` (ISO 639-1, e.g. hi) choose among the served models;
        neither: the first one. `decoding`: greedy (exactly NeMo's) or beam (CTC beam search, with the model's
        n-gram LM if it has one); default: the server's ASR_DECODING. `hotwords`: `phrase[:weight], ...` to
        favour (a negative weight disfavours); they imply beam search. `itn=true`: the written form (numbers,
        dates, money, times as digits and symbols; `text_spoken` keeps the text as recognised) for a model whose
        language has grammars; default: the server's ASR_ITN. `itn_digits`: devanagari or latin digits in it."""
        fields = transcribe.TranscribeFields(
            timestamps=timestamps,
            response_format=response_format,
            model=model,
            language=language,
            decoding=decoding,
            hotwords=hotwords,
            itn=itn,
            itn_digits=itn_digits,
        )
        state, media, agent = transcribe.caller(ctx)
        answer = await transcribe.transcribe(self, await anyio.Path(audio).read_bytes(), fields, state, media, agent)
        if ctx is not None and not isinstance(answer, Transcription):
            ctx.response.status_code = answer.status_code  # with a ctx parameter, BentoML sets the status from it
        return answer  # type: ignore[return-value]

    @bentoml.task
    async def transcribe_job(
        self,
        audio: Path,
        timestamps: bool = False,
        response_format: ResponseFormat = "json",
        model: str = "",
        language: str = "",
        decoding: Literal["default", "greedy", "beam"] = "default",
        hotwords: str = "",
        itn: bool | None = None,
        itn_digits: Literal["default", "devanagari", "latin"] = "default",
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> Transcription | str:
        """A transcription job for long recordings: the same fields and answer as /transcribe, with the jobs'
        limits (ASR_JOB_MAX_UPLOAD_MB, ASR_JOB_MAX_DURATION_S). POST /transcribe_job/submit queues it and answers
        {"task_id", "status"}; GET /transcribe_job/status and /transcribe_job/get, PUT /transcribe_job/cancel and
        POST /transcribe_job/retry take ?task_id=. Jobs are kept on disk (ASR_JOBS_DIR): they survive restarts,
        and a finished job's answer is kept ASR_JOB_TTL_S. POST /transcribe_job itself answers at once, as
        /transcribe."""
        answer = await self.transcribe(
            audio, timestamps, response_format, model, language, decoding, hotwords, itn, itn_digits, ctx=ctx
        )
        return cast("Transcription | str", answer)

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        """The models served (the first is the default), the providers and readiness (with the reason when
        not ready)."""
        return {**self.policy.catalog.status(await self.recognition.status()), "patches": patches.report()}


OPEN_PATHS = open_paths(SETTINGS.metrics_auth, SETTINGS.docs_auth)
if patches.applied("openapi_document"):  # /docs.json and the bento's apis/openapi.yaml: service/api/openapi.py
    openapi.install(Transcriber, secured=KEYS.enabled, open_paths=OPEN_PATHS)
guard = guard_options(SETTINGS, Access(KEYS, OPEN_PATHS, SETTINGS.cors_origins), READINESS)
Transcriber.add_asgi_middleware(RequestGuard, **guard)  # type: ignore[attr-defined]
