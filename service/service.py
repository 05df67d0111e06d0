"""BentoML glue: the entry service (public API) and the recognizer (owns the session, batches).

Everything else lives in plain modules, by stage: audio/ (decoding, the VAD, cutting into segments),
recognition/ (the ONNX Runtime session, greedy CTC, text, the transcript with word times), api/ (request
guard, the /v1 routes, response types and formats, the OpenAPI document, metrics); beside them catalog.py
(the served models and which one a request gets), patches.py (fixes to BentoML 1.4.39's serving path),
errors.py, settings.py, manifest.py.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import os
import pickle
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import aiohttp
import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse, PlainTextResponse, Response

from service import patches
from service.api import metrics, openapi
from service.api.formats import ResponseFormat, media_type, render
from service.api.http import (
    BENTOML_INTERNAL,
    FORM_HANDLERS,
    READINESS,
    REQUEST_LOG,
    AbandonedCallLog,
    CancelOnDisconnect,
    FormRoute,
    RequestGuard,
    error_body,
)
from service.api.openai_api import OPENAI_FIELDS, openai_app
from service.api.schemas import SegmentSpan, Transcription, Word
from service.catalog import ServedModel
from service.errors import ASRError, AudioTooShort, BadRequest, NotReady, Overloaded, RecognizerUnavailable
from service.recognition.beam import Decoding, HotwordError, parse_hotwords
from service.recognition.recognizer import Recognizer as Engine
from service.recognition.recognizer import SegmentResult
from service.recognition.transcript import Transcript
from service.settings import Settings, SettingsError


def _fail(message: str) -> None:
    """Stop the start with one clear line (instead of a traceback, or BentoML's schema error naming its own
    config keys rather than the ASR_* setting the user wrote)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


try:
    patches.apply()
    SETTINGS = Settings.from_env()
except (SettingsError, patches.PatchMismatch) as _exc:
    _fail(str(_exc))


def segments_in_flight(gpu: bool) -> int:
    """Segments of one request in the recognizer's queue at once: a long file neither fills the queue past its
    latency bound by itself (a 10-minute file is 20 segments) nor makes shorter requests wait behind all of it.
    A GPU runs a whole batch at once: there a request may fill one."""
    return max(4, SETTINGS.batch_max_size) if gpu else 4


def entry_workers() -> int:
    """ASR_ENTRY_WORKERS, or by default one process per two cores where the recognizer will have an NVIDIA GPU
    (one entry process decodes and resamples for ~100x real time, a GPU recognises for thousands), else one."""
    if SETTINGS.entry_workers:
        return SETTINGS.entry_workers
    from service.recognition.device import nvidia_gpu_present

    if SETTINGS.device != "cpu" and nvidia_gpu_present():
        return max(1, min(8, len(os.sched_getaffinity(0)) // 2))
    return 1


GREEDY = Decoding()


class TranscribeForm(BaseModel):
    """/transcribe's fields besides the file (the API's signature below declares the same, for BentoML)."""

    model_config = ConfigDict(extra="ignore")

    timestamps: bool = False
    response_format: ResponseFormat = "json"
    model: str = ""
    language: str = ""
    decoding: Literal["default", "greedy", "beam"] = "default"
    hotwords: str = ""


def choose_decoding(name: str, hotwords: str) -> Decoding:
    """A request's `decoding` and `hotwords` fields -> how to decode. Hotwords imply beam search; asking for
    greedy decoding with hotwords is a contradiction (400)."""
    try:
        phrases = parse_hotwords(hotwords, SETTINGS.hotword_weight, SETTINGS.max_hotwords, SETTINGS.max_hotword_words)
    except HotwordError as exc:
        raise BadRequest(str(exc), "hotwords") from None
    if name not in ("", "default", "greedy", "beam"):
        raise BadRequest(f"decoding must be greedy or beam, not {name!r}", "decoding")
    if phrases and name == "greedy":
        raise BadRequest("hotwords need beam search: leave decoding out or set it to beam", "hotwords")
    beam = bool(phrases) or name == "beam" or (name in ("", "default") and SETTINGS.decoding == "beam")
    return Decoding(beam=True, hotwords=phrases) if beam else GREEDY


def _served_tags() -> tuple[str, ...]:
    """ASR_MODELS / ASR_MODEL when set; else the models a bento was built for (`bentoml build --arg
    models=TAG,...`, kept in the bento); else the default."""
    if os.environ.get("ASR_MODELS", "").strip() or os.environ.get("ASR_MODEL", "").strip():
        return SETTINGS.model_tags
    arguments = bentoml.use_arguments()
    built = getattr(arguments, "models", "") or getattr(arguments, "model", "")
    return tuple(t.strip() for t in str(built).split(",") if t.strip()) or SETTINGS.model_tags


# At class scope (below), so that `bentoml build` records (and containers carry) every model.
MODELS = [bentoml.models.BentoModel(tag) for tag in _served_tags()]
log = logging.getLogger("asr")


def _check_variant() -> None:
    """ASR_VARIANT must exist in every served model: refused at start-up, not at the first request."""
    from service.manifest import Manifest

    if not SETTINGS.variant:
        return
    for model in MODELS:
        try:
            variants = Manifest.read(Path(model.stored.path)).variants
        except Exception:
            continue  # a missing or unreadable model is reported by BentoML and the recognizer, by name
        if SETTINGS.variant not in variants:
            has = ", ".join(sorted(variants)) or "none"
            _fail(
                f"ASR_VARIANT={SETTINGS.variant!r}: model {model.tag} has no {SETTINGS.variant} variant (it has: "
                f"{has}); export it with `python -m export ... --variants {SETTINGS.variant}` or unset ASR_VARIANT"
            )


_check_variant()


def _method(index: int, kind: str = "infer") -> str:
    """Model `index`'s batch API, named after the model: BentoML labels its batching metrics with it. `infer_`:
    greedy results; `logprobs_`: the log-probabilities beam search decodes; `stream_`: streaming buffers (each its
    own batch queue)."""
    name = re.sub(r"\W", "_", str(MODELS[index].tag).split(":")[0])
    return f"{kind}_{name}"


patches.on_dropped = metrics.SEGMENTS_DROPPED.inc
# what the service answers (BentoML's HTTP metrics count any other path as "other"; "/x/" is a family)
patches.known_paths.update(
    {"/", "/docs.json", "/schema.json", "/readyz", "/livez", "/healthz", "/metrics", "/transcribe", "/status"}
    | {"/v1/audio/transcriptions", "/v1/models", "/v1/models/", "/static_content/"}
    | {f"/{_method(i, kind)}" for i in range(len(MODELS)) for kind in ("infer", "logprobs", "stream")}  # batch APIs
    | {"/v1/realtime"}
)


def _store_entries(service: Any) -> list[Any]:
    """The served models' store entries, in order (a BentoModel class attribute resolves on instance access)."""
    return [getattr(service, f"model_{index}") for index in range(len(MODELS))]


def _count_runs(engine: Engine, results: list[Any], failed: int) -> None:
    """The recognizer's segments run and failed, by model."""
    name = engine.manifest.name
    if failed:
        metrics.SEGMENTS_RUN.labels(model=name, outcome="failed").inc(failed)
    metrics.SEGMENTS_RUN.labels(model=name, outcome="run").inc(len(results) - failed)


def _batchable(api: Any, index: int, kind: str) -> Any:
    """`api` as model `index`'s batch API of `kind`: each its own adaptive-batching queue, so no batch mixes
    models or kinds."""
    api.__name__ = api.__qualname__ = _method(index, kind)
    return bentoml.api(
        batchable=True, max_batch_size=SETTINGS.batch_max_size, max_latency_ms=SETTINGS.batch_max_latency_ms
    )(api)


def _infer_api(index: int) -> Any:
    """Model `index`'s greedy results, one per segment (failed ones carry `error`)."""

    def infer(self: Any, segments: list[np.ndarray]) -> list[SegmentResult]:
        engine: Engine = self.engines[index]
        results = engine.infer(segments)
        _count_runs(engine, results, sum(1 for r in results if r.error))
        return results

    return _batchable(infer, index, "infer")


def _array_api(index: int, kind: str) -> Any:
    """Model `index`'s arrays, one per item, an empty one where ONNX Runtime failed. logprobs: each segment's
    [frames, vocab+1] float32 over its valid frames, for beam search; stream: each streaming buffer (normalised
    features, one shape per model, from all open streams) through the encoder graph, [steps, 2] (best token id,
    its log-probability)."""

    def arrays(self: Any, items: list[np.ndarray]) -> list[np.ndarray]:
        engine: Engine = self.engines[index]
        results: list[np.ndarray] = getattr(engine, kind)(items)
        _count_runs(engine, results, sum(1 for r in results if r.shape[0] == 0))
        return results

    return _batchable(arrays, index, kind)


class Recognizer:
    """Owns one ONNX Runtime session per served model (one process, so a second model costs its session, not
    a second Python and BentoML; benchmarks/results/models.md has the figures)."""

    def __init__(self) -> None:
        from service.catalog import segment_samples
        from service.manifest import Manifest
        from service.recognition.lanes import Cores

        self.engines: list[Engine] = []
        # every CPU session run of this process, of every model, scheduled on the cores (lanes.py)
        cores = Cores(SETTINGS.lanes) if SETTINGS.lanes > 1 else None
        for model in _store_entries(self):
            directory = Path(model.path)
            try:
                manifest = Manifest.read(directory)
                engine = Engine(
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
            except Exception as exc:
                # One clear line before BentoML logs the traceback; the service never turns ready.
                reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                log.error(
                    "cannot load model %s (%s): %s; re-export it with `python -m export`", model.tag, directory, reason
                )
                raise
            if not engine.not_ready_reason:
                engine.warmup()
            self.engines.append(engine)
        log.info("recognizer ready=%s providers=%s", self._ready(), [e.providers for e in self.engines])

    def _ready(self) -> bool:
        return not any(e.not_ready_reason for e in self.engines)

    async def __is_ready__(self) -> bool:
        return self._ready()

    # async: answered on the event loop, never queued behind inference (sync APIs share BentoML's one-thread
    # limiter with the batch runs, so under load a status call waited for seconds and readiness flapped).
    @bentoml.api
    async def status(self) -> dict[str, Any]:
        return {
            "ready": self._ready(),
            "reason": next((e.not_ready_reason for e in self.engines if e.not_ready_reason), ""),
            # a model loaded without the device it was told to demand will not get it by waiting
            "permanent": not self._ready(),
            "providers": self.engines[0].providers,
            # on a GPU provider (CUDA or TensorRT), wherever ASR_DEVICE=auto or cuda landed: the entry sizes the
            # segments a request keeps in flight by it
            "gpu": any(e.on_gpu for e in self.engines),
            "models": [
                {"providers": e.providers, "graph": e.graph_file, "variant": SETTINGS.variant or "fp32"}
                for e in self.engines
            ],
        }


for _index, _model in enumerate(MODELS):
    setattr(Recognizer, f"model_{_index}", _model)
    setattr(Recognizer, _method(_index), _infer_api(_index))
    for _kind in ("logprobs", "stream"):
        setattr(Recognizer, _method(_index, _kind), _array_api(_index, _kind))


def cpu_lanes() -> int:
    """Segments the recognizer may run at once on the CPU (its lanes; it runs one batch at a time on a GPU)."""
    from service.recognition.device import nvidia_gpu_present

    return SETTINGS.lanes if SETTINGS.device == "cpu" or not nvidia_gpu_present() else 1


# as many batches in flight, and threads to run them, as lanes: a lane that frees takes the next segment at once
patches.concurrent_batches = CPU_LANES = cpu_lanes()
Recognizer = bentoml.service(  # type: ignore[misc]
    name="asr_recognizer",
    threads=CPU_LANES,
    logging={"access": {"enabled": False}},  # a line per batch call says nothing the entry's request lines miss
    # Only the recognizer asks for a GPU; BentoML then sets CUDA_VISIBLE_DEVICES for its worker.
    resources={"gpu": 1} if SETTINGS.device != "cpu" else {},
    workers=1,
    traffic={"timeout": SETTINGS.timeout_s},
    # BentoML 1.4.39 renews the caller's connection session every `max_requests` calls or `max_age` seconds
    # by closing it while other calls are still in flight on it (_bentoml_impl/client/proxy2.py,
    # get_session): under concurrent load those calls die with "Server disconnected". The recognizer is
    # local (a Unix socket); never renew.
    runner_connection={"max_requests": 2**62, "max_age": 1e12},
)(Recognizer)
Recognizer.add_asgi_middleware(CancelOnDisconnect)  # type: ignore[attr-defined]
# BentoML logs each call cancelled that way as an ERROR with two tracebacks; the request's own line says it.
logging.getLogger("bentoml._internal.server.http_app").addFilter(AbandonedCallLog())


def _created(entry: Any) -> int:
    """The store entry's creation time in Unix seconds (0 when the store does not say)."""
    when = getattr(getattr(entry, "info", None), "creation_time", None)
    return int(when.timestamp()) if when is not None else 0


def _agent(ctx: Any) -> str:
    """BentoML's SyncHTTPClient, AsyncHTTPClient and `bentoml.depends(url=...)` proxies say who they are."""
    return str(ctx.request.headers.get("user-agent", "")) if ctx is not None else ""


def _media(ctx: Any) -> str:
    """A parent service that depends on this one by import sends its arguments pickled."""
    return str(ctx.request.headers.get("content-type", "")) if ctx is not None else ""


class Transcriber:
    recognizer = bentoml.depends(Recognizer)

    def __init__(self) -> None:
        from service.audio.decode import Limits
        from service.catalog import Catalog
        from service.manifest import Manifest

        self.catalog = Catalog(
            [
                ServedModel.build(str(m.tag), Manifest.read(Path(m.path)), _method(i), SETTINGS.segment_s, _created(m))
                for i, m in enumerate(_store_entries(self))
            ]
        )
        self.limits = Limits(
            SETTINGS.min_duration_s,
            SETTINGS.max_duration_s,
            SETTINGS.formats,
            SETTINGS.require_sample_rate,
            SETTINGS.require_mono,
            SETTINGS.max_decoded_mb,
        )
        # The VAD that cuts long audio (ASR_SEGMENTER=vad), in this process, on its own threads: one per core,
        # not one per request in flight. It is CPU-bound (more threads than cores gain nothing), and each
        # thread's ~10 MB of blocks stay in that thread's malloc arena: on anyio's 40 shared threads, 16
        # clients grew this process by 100 MB and a 60-s soak by 7 %.
        from concurrent.futures import ThreadPoolExecutor

        self.vad = None
        if SETTINGS.segmenter == "vad":
            from service.audio.vad import SileroVAD

            self.vad = SileroVAD()
        # also streaming's VAD and feature computation (small steps, in order per session)
        self._vad_threads = ThreadPoolExecutor(len(os.sched_getaffinity(0)), thread_name_prefix="vad")
        self._streams: dict[str, Any] = {}  # per model: streaming Geometry and its front-end runner
        # Beam search's decoders, in their own processes (started at the first beam request, or now when beam
        # search is the default); each model's n-gram LM from its store entry
        from service.recognition.beam import BeamPool, LMSpec

        if importlib.util.find_spec("pyctcdecode") is None:
            _fail("beam search's pyctcdecode is not installed: pip install --no-deps pyctcdecode==0.5.0")
        specs = {}
        for served, entry in zip(self.catalog.models, _store_entries(self), strict=True):
            d = served.manifest.decoder
            lm = LMSpec(str(Path(entry.path) / d.lm_file), d.lm_alpha, d.lm_beta) if d.lm_file else None
            if lm is not None and importlib.util.find_spec("kenlm") is None:
                _fail(
                    f"model {served.tag} has an n-gram LM ({d.lm_file}) and KenLM's Python module is not installed: "
                    "pip install kenlm==0.3.0 (it builds with g++), or export the model without --lm"
                )
            m = served.manifest
            specs[served.name] = (list(m.vocabulary), m.blank_id, lm, m.tokenizer.unknown_ids)
        self.beams = BeamPool(specs, SETTINGS.beam_workers)
        if SETTINGS.decoding == "beam":
            self.beams.start()
        # The guard hands these routes the form it parsed (service/api/http.py)
        from service.api.openai_api import answer_form as answer_openai

        FORM_HANDLERS["/transcribe"] = self.answer_form
        FORM_HANDLERS["/v1/audio/transcriptions"] = functools.partial(answer_openai, self)
        # One line per request (service/api/http.py), under BentoML's logging set-up (done before this runs)
        REQUEST_LOG.disabled = False
        REQUEST_LOG.setLevel(logging.INFO)
        # Requests check readiness until it is first true, then never again: a loaded model does not go away,
        # and a recognizer that dies shows as 503 `unavailable` from the call itself. Probes always ask.
        self._recognizer_ready = False
        self._segments_in_flight = segments_in_flight(SETTINGS.device == "cuda")  # until the recognizer says

    async def __is_ready__(self) -> bool:
        return (await self._recognizer_status())["ready"] is True

    async def _recognizer_status(self) -> dict[str, Any]:
        import anyio

        try:
            with anyio.fail_after(5):  # a recognizer that cannot start must not hang readiness probes
                status: dict[str, Any] = await self.recognizer.to_async.status()
        except Exception:
            reason = "the recognizer does not answer (is the model loadable? the server log says why)"
            status = {"ready": False, "reason": reason, "providers": [], "models": []}
        if status["ready"] is True:
            self._recognizer_ready = True
            self._segments_in_flight = segments_in_flight(bool(status.get("gpu")))
        READINESS.reason, READINESS.permanent = status["reason"], bool(status.get("permanent"))
        return status

    # ---- streaming (ws /v1/realtime: service/api/realtime.py)

    def vad_model(self) -> Any:
        """The Silero VAD session (shared with file requests; created here when ASR_SEGMENTER=energy)."""
        if self.vad is None:
            from service.audio.vad import SileroVAD

            self.vad = SileroVAD()
        return self.vad

    def streaming_geometry(self, served: ServedModel) -> Any:
        """The model's streaming Geometry and its front end (an ONNX Runtime session in this process, made once);
        StreamingUnsupported when it has no streaming graphs, is not at 16 kHz, or streaming is off."""
        from service.recognition.streaming import Geometry, StreamingUnsupported, frontend_runner

        if served.name not in self._streams:
            if SETTINGS.realtime_sessions == 0:
                raise StreamingUnsupported("streaming is off on this server (ASR_REALTIME_SESSIONS=0)")
            rate = served.manifest.sample_rate
            if rate != 16000:
                why = f"model {served.name} runs at {rate} Hz: streaming serves 16 kHz models (its VAD hears 16 kHz)"
                raise StreamingUnsupported(why)
            geometry = Geometry.of(served.manifest, SETTINGS.stream_chunk_s, SETTINGS.stream_buffer_s)
            import onnxruntime as ort

            entry = next(e for s, e in zip(self.catalog.models, _store_entries(self), strict=True) if s is served)
            assert served.manifest.streaming is not None  # Geometry.of checked
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            path = str(Path(entry.path) / served.manifest.streaming.frontend_file)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self._streams[served.name] = (geometry, frontend_runner(session))
        return self._streams[served.name]

    async def run_blocking(self, fn: Any, *args: Any) -> Any:
        """CPU work of the VAD and of streams' features off the event loop, on the VAD's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._vad_threads, fn, *args)

    async def recognize_stream(self, served: ServedModel, buffers: list[np.ndarray]) -> list[np.ndarray]:
        """A stream's buffers through the model's streaming batch queue (shared with every other stream)."""
        try:
            out = await self._recognize(served, buffers, served.stream_method)
        except (aiohttp.ClientConnectionError, ConnectionError, bentoml.exceptions.BentoMLException) as exc:
            # the recognizer restarted, or its queue is past its latency bound: the session ends with an error
            # event (service/api/realtime.py), its client reconnects
            log.warning("recognizer call for a stream failed: %r", exc)
            return [np.zeros((0, 2), np.float32)] * len(buffers)
        return [np.asarray(r, dtype=np.float32) for r in out]

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
        import anyio

        state = ctx.request.state if ctx is not None else SimpleNamespace()
        data = await anyio.Path(audio).read_bytes()
        options = TranscribeForm(
            timestamps=timestamps,
            response_format=response_format,
            model=model,
            language=language,
            decoding=decoding,
            hotwords=hotwords,
        )
        answer = await self.answer(data, options, state, _media(ctx), _agent(ctx))
        if ctx is not None and isinstance(answer, Response):
            ctx.response.status_code = answer.status_code  # with a ctx parameter, BentoML sets the status from it
        return answer  # type: ignore[return-value]

    async def answer_form(self, scope: Any, form: Any) -> Response:
        """POST /transcribe from the form RequestGuard parsed (service/api/http.py): parsed once, the upload never
        written to a file. The same fields, checks and answers as the BentoML API above."""
        from pydantic import ValidationError
        from starlette.datastructures import Headers, State

        fields: dict[str, Any] = {}
        for key in form:  # as BentoML reads a form: a field's last value, JSON-decoded when it is JSON
            if key != "audio":
                value = form[key]
                value = (await value.read()).decode("utf-8", "replace") if not isinstance(value, str) else value
                try:
                    fields[key] = json.loads(value)
                except ValueError:
                    fields[key] = value
        try:
            options = TranscribeForm.model_validate(fields)
        except ValidationError as exc:
            errors = exc.errors()
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
            param = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None
            return JSONResponse(error_body("asr", 400, "bad_request", problems, param), 400)
        data = await form["audio"].read()
        headers = Headers(scope=scope)
        state = State(scope.setdefault("state", {}))
        answer = await self.answer(data, options, state, headers.get("content-type", ""), headers.get("user-agent", ""))
        assert isinstance(answer, Response)  # a pickled request never comes this way
        return answer

    async def answer(
        self, data: bytes, options: TranscribeForm, state: Any, media: str, agent: str
    ) -> Response | Transcription:
        """An upload's bytes and the request's options -> the answer (a Transcription itself for a parent service
        that sent pickled arguments). `state`: the request's, where the model and the audio's length are left
        for the request's metrics and log line."""
        try:
            served = self.catalog.select(options.model, options.language)
            chosen = choose_decoding(options.decoding, options.hotwords)
            state.asr_model = served.name  # for the request metrics (service/api/http.py)
            transcript = await self.run(data, served, chosen)
            state.asr_audio_s = transcript.duration_s  # for the request's log line
        except ASRError as exc:  # (RequestGuard adds Retry-After to 503s)
            return JSONResponse(exc.body(), status_code=int(exc.status))
        if options.response_format != "json":
            text = render(transcript, options.response_format)
            # BentoML's clients and proxies decode every answer as the API's declared type (JSON, or a pickle for
            # a parent service that depends on this one by import), never as plain text (a text body raised
            # JSONDecodeError); BentoML itself would send a str raw. They get the str in their own encoding.
            if media.startswith(BENTOML_INTERNAL):
                return Response(pickle.dumps(text), media_type=BENTOML_INTERNAL)
            if agent.startswith("BentoML HTTP Client/"):
                return JSONResponse(text)
            return PlainTextResponse(text, media_type=media_type(options.response_format))
        words = [Word(**vars(w)) for w in transcript.words] if options.timestamps else None
        result = Transcription(
            text=transcript.text,
            duration_s=round(transcript.duration_s, 3),
            model=served.tag,
            language=served.language,
            segments=[
                SegmentSpan(start=s.start, end=s.end, text=s.text, no_speech_prob=s.no_speech_prob)
                for s in transcript.segments
            ],
            words=words,
            speech_s=transcript.speech_s,
        )
        if media.startswith(BENTOML_INTERNAL):
            return result  # BentoML pickles it for the parent service
        # BentoML's JSON for a union-typed answer escapes every non-ASCII character (json.dumps): UTF-8 here
        return JSONResponse(result.model_dump(mode="json"))

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        """The models served (the first is the default), the providers and readiness (with the reason when
        not ready)."""
        default = self.catalog.default
        status = await self._recognizer_status()
        running = status.pop("models", [])
        models = [
            {**m.describe(), **(running[i] if i < len(running) else {"providers": [], "ready": False})}
            for i, m in enumerate(self.catalog.models)
        ]
        return {"model": default.tag, "language": default.language, **status, "models": models}

    async def run(self, data: bytes, served: ServedModel, decoding: Decoding = GREEDY) -> Transcript:
        """Bytes of an audio file -> transcript with the model chosen by catalog.select: decode, cut,
        recognise (batched, in that model's queue), assemble."""
        import threading
        import time

        import anyio

        from service.audio.decode import decode
        from service.audio.segment import Segment, cut_by_speech, hear, split
        from service.recognition.transcript import assemble

        if not self._recognizer_ready:
            status = await self._recognizer_status()
            if not status["ready"]:
                raise NotReady(f"the service is not ready: {status['reason']}")
        manifest, rate = served.manifest, served.manifest.sample_rate
        started = time.monotonic()
        stop = threading.Event()
        hearing = None  # the VAD's pass over audio of one segment, run while the model recognises it
        try:
            # abandon_on_cancel: a cancelled request (client gone, timeout) does not wait for its decoding or
            # its VAD, which stop at their next block
            decoded = await anyio.to_thread.run_sync(
                decode, data, rate, self.limits, stop.is_set, abandon_on_cancel=True
            )
            if decoded.samples.shape[0] < manifest.frame_shift_s * rate:
                shift_ms = manifest.frame_shift_s * 1000
                raise AudioTooShort(
                    f"audio lasts {decoded.duration_s * 1000:.1f} ms, less than one model step ({shift_ms:g} ms)"
                )
            total = decoded.samples.shape[0]
            speech_s = None
            if self.vad is None:
                segments = split(decoded.samples, served.segment_samples, rate, SETTINGS.min_pause_s)
            elif total <= served.segment_samples:
                # One segment whatever the VAD hears (it adds speech_s and no_speech_prob): no need to wait for it
                segments = [Segment(0, decoded.samples)]
                hearing = asyncio.ensure_future(self.run_blocking(hear, decoded.samples, rate, self.vad, stop.is_set))
                hearing.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, even when not awaited
            else:
                segments, speech = await self.run_blocking(
                    cut_by_speech,
                    decoded.samples,
                    rate,
                    served.segment_samples,
                    SETTINGS.vad_pad_s,
                    self.vad,
                    stop.is_set,
                )
                speech_s = round(speech.speech_s(), 3)
            method = served.logprobs_method if decoding.beam else served.method
            try:
                raw = await self._recognize(served, [s.samples for s in segments], method)
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
            if hearing is not None:
                speech = await hearing
                segments = [Segment(0, decoded.samples, speech.no_speech_prob(0, total))]
                speech_s = round(speech.speech_s(), 3)
        except BaseException:
            stop.set()
            if hearing is not None:
                hearing.cancel()
            raise
        if decoding.beam:
            results: list[Any] = await self._beam_search(served, raw, decoding)
        else:
            results = [r if isinstance(r, SegmentResult) else SegmentResult.model_validate(r) for r in raw]
            failed = next((r.error for r in results if r.error), "")
            if failed:
                raise RecognizerUnavailable(f"{failed}; retry shortly")
        transcript = assemble(
            segments, results, served.detok, manifest.frame_shift_s, rate, decoded.duration_s, total, speech_s
        )
        elapsed = time.monotonic() - started
        metrics.AUDIO_SECONDS.labels(model=served.name).inc(decoded.duration_s)
        metrics.SENT_SECONDS.labels(model=served.name).inc(sum(s.samples.shape[0] for s in segments) / rate)
        if speech_s is not None:
            metrics.SPEECH_SECONDS.labels(model=served.name).inc(speech_s)
        metrics.PROCESSING_SECONDS.labels(model=served.name).observe(elapsed)
        metrics.REAL_TIME_FACTOR.labels(model=served.name).observe(elapsed / max(decoded.duration_s, 1e-3))
        metrics.SEGMENTS_PER_REQUEST.labels(model=served.name).observe(len(segments))
        return transcript

    async def _beam_search(self, served: ServedModel, logprobs: list[np.ndarray], decoding: Decoding) -> list[Any]:
        """Each segment's log-probabilities through beam search, in the decoding processes."""
        columns = len(served.manifest.vocabulary) + 1
        if any(lp.ndim != 2 or lp.shape[0] == 0 or lp.shape[1] != columns for lp in logprobs):
            raise RecognizerUnavailable("the model could not run; the server log has the details; retry shortly")
        from concurrent.futures.process import BrokenProcessPool

        width = SETTINGS.beam_width or served.manifest.decoder.beam_width
        try:
            return list(
                await asyncio.gather(*(self.beams.decode(served.name, lp, width, decoding.hotwords) for lp in logprobs))
            )
        except BrokenProcessPool as exc:
            log.error("a beam search process died: %r", exc)
            raise RecognizerUnavailable("beam search failed (its process died); retry shortly") from exc

    async def _recognize(self, served: ServedModel, segments: list[np.ndarray], method: str) -> list[Any]:
        """Every segment through the model's batch queue, at most segments_in_flight() at a time; results in
        order."""

        remote = getattr(self.recognizer.to_async, method)
        in_flight = metrics.SEGMENTS_IN_FLIGHT.labels(model=served.name)

        async def infer(batch: list[np.ndarray]) -> list[Any]:
            in_flight.inc(len(batch))
            try:
                return await call(batch)
            finally:
                in_flight.dec(len(batch))

        async def call(batch: list[np.ndarray]) -> list[Any]:
            try:
                return list(await remote(batch))
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled keep-alive connection the recognizer's server closed (idle timeout) just as it was
                # reused: the call never arrived (seen as "Can not write request body" twice in eight 10-minute
                # files with the demo model). The call is a pure function of the audio: try once more on a
                # fresh connection; a recognizer that really died fails again and is reported as such.
                log.info("recognizer call retried once: %r", exc)
                await asyncio.sleep(0.05)
                return list(await remote(batch))

        if not segments:  # the VAD heard no speech in a long recording
            return []
        if len(segments) <= self._segments_in_flight:
            return await infer(segments)
        window = asyncio.Semaphore(self._segments_in_flight)

        async def one(segment: np.ndarray) -> Any:
            async with window:
                return (await infer([segment]))[0]

        tasks = [asyncio.ensure_future(one(s)) for s in segments]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:  # after a failure, do not leave the rest running
                task.cancel()


for _index, _model in enumerate(MODELS):  # the entry reads every model's manifest (and bentos pack them)
    setattr(Transcriber, f"model_{_index}", _model)

Transcriber = bentoml.asgi_app(openai_app, path="/v1")(  # type: ignore[misc]
    bentoml.service(
        name="asr",
        logging={"access": {"enabled": False}},  # RequestGuard logs one line per request, with its request id
        # RequestGuard enforces ASR_TIMEOUT_S and ASR_MAX_CONCURRENCY with our error bodies; BentoML's own
        # limits are a looser backstop for the other routes.
        traffic={"timeout": SETTINGS.timeout_s + 30, "max_concurrency": SETTINGS.max_concurrency * 2},
        workers=entry_workers(),
    )(Transcriber)
)

openapi.install(Transcriber)  # /docs.json and the bento's apis/openapi.yaml: service/api/openapi.py
Transcriber.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    max_body=SETTINGS.max_upload_bytes,
    routes={
        "/transcribe": FormRoute(
            "audio",
            frozenset({"audio", "timestamps", "response_format", "model", "language", "decoding", "hotwords"}),
        ),
        "/v1/audio/transcriptions": FormRoute("file", OPENAI_FIELDS, style="openai", allow_unknown=True),
    },
    max_concurrency=SETTINGS.max_concurrency,
    timeout_s=SETTINGS.timeout_s,
)
