"""The services' parts, built from the settings and the served models' store entries: the recognizer's engines
(one ONNX Runtime session per model); the entry's policy, recognizer client and pipelines; the API keys; the
request guard's options and the paths the service answers. Plain Python: service/service.py hands BentoML's store
entries and dependency proxy in."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from service import patches
from service.api import jobs, openai_api, transcribe
from service.api.forms import FormRoute
from service.api.guard import Access
from service.api.keys import KeyStore
from service.api.realtime import SessionLimits
from service.audio.decode import Limits
from service.audio.vad import SileroVAD
from service.catalog import Catalog, ServedModel, segment_samples
from service.manifest import Manifest
from service.pipeline.client import Readiness, Recognition, RecognizerClient
from service.pipeline.files import FileSettings, FileTranscription
from service.pipeline.jobstore import JobStore
from service.pipeline.policy import DecodingRules, Policy, WritingRules
from service.pipeline.streams import StreamSettings, StreamTranscription
from service.pipeline.threads import CpuThreads
from service.recognition.beam import beam_pool
from service.recognition.lanes import Cores
from service.recognition.recognizer import Recognizer
from service.settings import Settings

log = logging.getLogger("asr")


def key_store(settings: Settings, announce: bool) -> KeyStore:
    """The API keys in force (KeysError for keys that cannot be used); `announce`: say at start whether the
    service is open."""
    keys = KeyStore(settings.api_keys_file, settings.api_keys)
    if announce:
        required = f"asr: API keys required ({keys.count()} in force)"
        open_ = "asr: no API keys set: the service is open to anyone who reaches it (ASR_API_KEYS_FILE or ASR_API_KEYS)"
        print(required if keys.enabled else open_, file=sys.stderr, flush=True)
    return keys


def load_engines(settings: Settings, entries: list[Any]) -> list[Recognizer]:
    """Every served model's session, warmed up unless it cannot be ready (a demanded device absent: the
    recognizer then says why)."""
    engines = []
    cores = Cores(settings.lanes) if settings.lanes > 1 else None  # every CPU run of every model (lanes.py)
    for entry in entries:
        directory = Path(entry.path)
        try:
            manifest = Manifest.read(directory)
            engine = Recognizer(
                directory,
                manifest,
                settings.device,
                settings.ort_threads,
                settings.variant,
                settings.device_options,
                segment_samples(manifest, settings.segment_s),
                streaming=settings.realtime_sessions > 0,
                lanes=settings.lanes,
                cores=cores,
            )
        except Exception as exc:  # one clear line before BentoML's traceback; the service never turns ready
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            advice = "re-export it with `python -m export`"
            log.error("cannot load model %s (%s): %s; %s", entry.tag, directory, reason, advice)
            raise
        if not engine.not_ready_reason:
            engine.warmup()
        engines.append(engine)
    return engines


def engines_status(engines: list[Recognizer], variant: str) -> dict[str, Any]:
    """The recognizer's status: readiness (with the first reason it is not), providers, whether a GPU runs."""
    reason = next((e.not_ready_reason for e in engines if e.not_ready_reason), "")
    return {
        "ready": not reason,
        "reason": reason,
        "permanent": bool(reason),  # a model loaded without the device it was told to demand stays so
        "providers": engines[0].providers,
        "gpu": any(e.on_gpu for e in engines),  # the entry sizes a request's segments in flight by it
        "models": [{"providers": e.providers, "graph": e.graph_file, "variant": variant or "fp32"} for e in engines],
    }


@dataclass
class EntryParts:
    policy: Policy
    recognition: Recognition
    files: FileTranscription
    streams: StreamTranscription
    realtime_limits: SessionLimits
    jobs: jobs.Jobs


def entry_parts(
    settings: Settings, entries: list[Any], methods: list[str], client: RecognizerClient, readiness: Readiness
) -> EntryParts:
    """`entries`: the served models' store entries, in order; `methods`: each one's greedy batch API."""
    s = settings
    catalog = Catalog(
        [ServedModel.from_store(e, method, s.segment_s) for e, method in zip(entries, methods, strict=True)]
    )
    rules = DecodingRules(s.decoding, s.hotword_weight, s.max_hotwords, s.max_hotword_words)
    recognition = Recognition(client, readiness, s.batch_max_size, gpu=s.device == "cuda")
    threads, vad = CpuThreads(), SileroVAD() if s.segmenter == "vad" else None
    limits = Limits(
        s.min_duration_s, s.max_duration_s, s.formats, s.require_sample_rate, s.require_mono, s.max_decoded_mb
    )
    models = [(m.name, m.tag, m.manifest, Path(e.path)) for m, e in zip(catalog.models, entries, strict=True)]
    beams = beam_pool(models, s.beam_workers)  # decoding processes, started at the first beam request...
    if s.decoding == "beam":
        beams.start()  # ...or now
    files = FileTranscription(
        recognition,
        limits,
        vad,
        threads,
        beams,
        FileSettings(s.vad_pad_s, s.min_pause_s, s.beam_width, s.segment_target),
    )
    directories = {name: path for name, _, _, path in models}
    streaming = StreamSettings(s.realtime_sessions, s.stream_chunk_s, s.stream_buffer_s)
    streams = StreamTranscription(recognition, threads, directories, streaming, vad)
    realtime_limits = SessionLimits(s.realtime_sessions, s.realtime_max_s, s.realtime_idle_s)
    job_limits = replace(limits, max_duration_s=s.job_max_duration_s, max_decoded_mb=s.job_max_decoded_mb)
    paced = Recognition(client, readiness, s.batch_max_size, gpu=s.device == "cuda", paced=True)
    job_files = FileTranscription(paced, job_limits, vad, threads, beams, files.settings)
    folder = Path(s.jobs_dir).expanduser()
    job_parts = jobs.Jobs(lambda: JobStore(folder, s.jobs_max, s.job_ttl_s), job_files, s.jobs_running)
    policy = Policy(catalog, rules, WritingRules(s.itn, s.itn_digits))
    policy.preload_writing()
    return EntryParts(policy, recognition, files, streams, realtime_limits, job_parts)


def served_paths(batch_apis: list[str]) -> set[str]:
    """What the service answers, for BentoML's HTTP metrics (any other path is counted as "other"; a path ending
    in "/" stands for its family)."""
    doors = {"/transcribe", "/status", "/v1/audio/transcriptions", "/v1/models", "/v1/models/", "/v1/realtime"}
    doors |= {jobs.ROUTE, f"{jobs.ROUTE}/submit", *jobs.TASK_ROUTES}
    bentoml_own = {"/", "/docs.json", "/schema.json", "/readyz", "/livez", "/healthz", "/metrics", "/static_content/"}
    return doors | bentoml_own | {"/ui", "/ui/"} | {f"/{name}" for name in batch_apis}


def guard_options(settings: Settings, access: Access, readiness: Readiness) -> dict[str, Any]:
    """The request guard's options (service/api/guard.py): the limits, the transcription routes' forms and the
    doors that answer them, readiness, who may call."""
    return {
        "max_body": settings.max_upload_bytes,
        "routes": {
            "/transcribe": FormRoute(transcribe.FILE_FIELD, transcribe.answer_form, transcribe.FIELDS),
            # BentoML's direct call of the job task: answered as /transcribe is
            jobs.ROUTE: FormRoute(transcribe.FILE_FIELD, transcribe.answer_form, transcribe.FIELDS),
            f"{jobs.ROUTE}/submit": FormRoute(
                transcribe.FILE_FIELD, jobs.submit_form, transcribe.FIELDS, max_body=settings.job_max_upload_bytes
            ),
            "/v1/audio/transcriptions": FormRoute(
                openai_api.FILE_FIELD, openai_api.answer_form, openai_api.OPENAI_FIELDS, "openai", allow_unknown=True
            ),
        },
        "max_concurrency": settings.max_concurrency,
        "timeout_s": settings.timeout_s,
        "readiness": readiness,
        "read_bentoml_bodies": patches.applied("bentoml_error_bodies"),
        "access": access,
        "own": dict.fromkeys(jobs.TASK_ROUTES, jobs.task_app),
    }
