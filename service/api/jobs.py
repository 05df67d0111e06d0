"""Jobs, the BentoML way, made durable: `transcribe_job` is a BentoML task (service/service.py), so its routes,
OpenAPI entries and clients (`client.transcribe_job.submit(...)` with `get_status`, `get`, `cancel`, `retry`) are
BentoML's; its submit, status, get, cancel and retry are answered here from the job store
(service/pipeline/jobstore.py) instead of BentoML's task store, which is deleted at every start, keeps results a
fixed 24 h, runs every submit at once with its upload in memory and refuses cancel on its own server.

A submission goes through the /transcribe door's checks (the request guard's form checks, the fields, the model
and decoding chosen) before it is queued, with the jobs' own upload limit; the job then runs the door's own code
with the jobs' duration and decoded-size limits (service/api/job_runner.py) and keeps its answer as /transcribe
would have given it: the same JSON, text, SRT or WebVTT, or the same error."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, BinaryIO, Protocol, cast

import anyio
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.api import transcribe
from service.api.entry import Entry, current
from service.api.job_runner import JobRunner
from service.api.replies import Receive, Scope, Send, error_body
from service.errors import ASRError, BadRequest, JobExpired, JobNotFinished, JobsUnavailable
from service.pipeline.files import FileTranscription
from service.pipeline.jobstore import CANCELED, COMPLETED, FAILED, Job, JobStore

log = logging.getLogger("asr")
ROUTE = "/transcribe_job"
# BentoML's task routes: path -> the method BentoML's clients use
TASK_ROUTES = {f"{ROUTE}/status": "GET", f"{ROUTE}/get": "GET", f"{ROUTE}/cancel": "PUT", f"{ROUTE}/retry": "POST"}


class Jobs:
    """What the job routes use of the entry: the store, the runner, the jobs' file pipeline. A store that cannot
    be opened (ASR_JOBS_DIR not writable, e.g. a read-only root file system) turns jobs off with the reason, in
    the log and in every job route's 503: the rest of the service serves."""

    def __init__(self, open_store: Callable[[], JobStore], files: FileTranscription, slots: int) -> None:
        self.files, self.unavailable = files, ""
        self._store: JobStore | None = None
        self.runner: JobRunner | None = None
        try:
            self._store = open_store()
        except (OSError, sqlite3.Error) as exc:
            self.unavailable = f"jobs are off: their folder cannot be used ({exc}); set ASR_JOBS_DIR to a writable one"
            log.error("asr: %s", self.unavailable)
            return
        self.runner = JobRunner(self._store, execute, slots)

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise JobsUnavailable(self.unavailable)
        return self._store

    def start(self) -> None:
        if self.runner:
            self.runner.start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.stop()

    def wake(self) -> None:
        if self.runner:
            self.runner.wake()


class JobEntry(Entry, Protocol):
    jobs: Jobs


def _entry() -> JobEntry:
    return cast(JobEntry, current())


def _owner(scope: Scope) -> str:
    """The API key that called (its id), "" when keys are off: a job is visible only to the key that submitted it."""
    return str(scope.get("state", {}).get("asr_key") or "")


async def execute(job: Job, data: BinaryIO, state: SimpleNamespace) -> tuple[int, str, bytes]:
    """A job's work: the /transcribe door's own answer to its upload and fields, with the jobs' limits."""
    entry = _entry()
    options = transcribe.TranscribeFields.model_validate(job.fields)

    def progress(done: int, total: int) -> None:  # read by the runner at each lease renewal
        state.progress = (done, total)

    answer = await transcribe.transcribe(entry, data, options, state, "", "", entry.jobs.files, progress)
    assert isinstance(answer, Response)
    return answer.status_code, answer.media_type or "application/json", bytes(answer.body)


async def submit_form(scope: Scope, form: Any) -> Response:
    """POST /transcribe_job/submit from the form the request guard parsed (its size, format and field checks):
    the fields checked as /transcribe checks them, the model and decoding chosen (a bad one is a 400 now, not a
    failed job), the upload written to disk, the job queued. BentoML's answer: {"task_id", "status"}."""
    entry = _entry()
    options = await transcribe.read_fields(form)
    if isinstance(options, Response):
        return options
    try:
        served = entry.policy.model(options.model, options.language)
        entry.policy.decoding(options.decoding, options.hotwords)
        entry.policy.writing(served, options.itn, options.itn_digits)
        upload = form[transcribe.FILE_FIELD].file  # copied from the form's own file (closed with the form)
        job = await anyio.to_thread.run_sync(entry.jobs.store.submit, options.model_dump(), upload, _owner(scope))
    except ASRError as exc:
        headers = {"retry-after": "30"} if exc.status == 429 else None
        return JSONResponse(exc.body(), status_code=int(exc.status), headers=headers)
    entry.jobs.wake()
    return JSONResponse({"task_id": job.id, "status": job.status()["status"]})


async def task_app(scope: Scope, receive: Receive, send: Send) -> None:
    """GET status and get, PUT cancel, POST retry: `?task_id=` as BentoML's clients send it."""
    request = Request(scope, receive)
    path, method = scope["path"], scope["method"]
    try:
        if TASK_ROUTES.get(path) != method:
            raise _MethodNotAllowed(f"{path} takes {TASK_ROUTES.get(path, 'nothing')}")
        task_id = request.query_params.get("task_id", "")
        if not task_id:
            raise BadRequest("task_id is required (?task_id=...)", "task_id")
        response = await _answer(path, task_id, _owner(scope), Headers(scope=scope).get("user-agent", ""))
    except _MethodNotAllowed as exc:
        response = JSONResponse(error_body("asr", 405, "method_not_allowed", str(exc)), 405)
    except ASRError as exc:
        response = JSONResponse(exc.body(), status_code=int(exc.status))
    await response(scope, receive, send)


class _MethodNotAllowed(Exception):
    pass


async def _answer(path: str, task_id: str, owner: str, agent: str) -> Response:
    entry = _entry()
    store = entry.jobs.store
    if path.endswith("/status"):
        return JSONResponse((await anyio.to_thread.run_sync(store.get, task_id, owner)).status())
    if path.endswith("/cancel"):
        job = await anyio.to_thread.run_sync(store.cancel, task_id, owner)
        return JSONResponse(job.status())
    if path.endswith("/retry"):  # BentoML's retry: the same input again, as a new task
        job = await anyio.to_thread.run_sync(store.retry, task_id, owner)
        entry.jobs.wake()
        return JSONResponse({"task_id": job.id, "status": job.status()["status"]})
    job, body = await anyio.to_thread.run_sync(store.answer, task_id, owner)
    if job.expired:
        raise JobExpired(f"job {job.id} finished more than ASR_JOB_TTL_S ago; its answer was deleted")
    if job.state not in (COMPLETED, FAILED) or body is None:
        state = "canceled" if job.state == CANCELED else f"still {job.state}"
        raise JobNotFinished(f"job {job.id} is {state}; its answer comes when its status is completed or failed")
    media = job.media_type or "application/json"
    if (
        job.state == COMPLETED
        and not media.startswith("application/json")
        and agent.startswith(transcribe.BENTOML_CLIENT)
    ):
        return JSONResponse(body.decode("utf-8"))  # BentoML's clients decode every answer as JSON (as /transcribe)
    return Response(body, status_code=job.status_code or 200, media_type=media)
