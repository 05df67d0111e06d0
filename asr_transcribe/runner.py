"""The files through the service: `concurrency` workers, each with its own BentoML AsyncHTTPClient (the client
closes the files it opened when a call ends, so calls in flight do not share one), refusals that say "later"
(429, 503) retried after their Retry-After, every other error counted with its status and code. Progress over
files and audio hours on a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr_transcribe.inputs import FORMATS, Item
from asr_transcribe.ledger import Ledger, write_atomically

RETRYABLE = {429, 503}
ATTEMPTS = 5


@dataclass
class Failure:
    source: Path
    status: int  # HTTP status, 0 when no answer came
    code: str  # the service's error code, or what went wrong on the way
    message: str


@dataclass
class Summary:
    files: int = 0
    done: int = 0
    skipped: int = 0
    audio_s: float = 0.0  # of the files transcribed in this run
    wall_s: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    interrupted: bool = False


@dataclass(frozen=True)
class Request:
    url: str
    token: str | None
    fmt: str
    fields: dict[str, Any]  # /transcribe's fields besides the audio and response_format
    timeout_s: float
    wait_ready_s: float = 30.0  # how long to wait for the service's /readyz at start
    jobs: bool = False  # each file as a job (POST /transcribe_job/submit), waited for, instead of one request

    @property
    def options(self) -> dict[str, Any]:
        """What the transcript depends on (the ledger's test of "done")."""
        return {"format": self.fmt, **self.fields}


def probe_duration_s(path: Path) -> float | None:
    """The audio's length from its container's header (PyAV), for progress and RTFx; None when unknown."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration:
                return float(container.duration) / 1_000_000  # av.time_base
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except Exception:
        return None
    return None


def error_of(exc: Exception) -> tuple[int, str, str]:
    """(status, code, message) of a failed call: the service's JSON error body when it sent one."""
    status = int(getattr(exc, "error_code", 0) or 0)
    text = str(getattr(exc, "message", "") or exc)
    with contextlib.suppress(ValueError, TypeError):
        body = json.loads(text)
        if isinstance(body, dict) and "error" in body:
            error = body["error"]
            if isinstance(error, dict):  # OpenAI's shape, should a proxy answer with it
                return status, str(error.get("code") or error.get("type")), str(error.get("message", ""))
            return status, str(error), str(body.get("message", ""))
    return status, type(exc).__name__ if not status else "http_error", text[:500]


class Progress:
    """A rich progress bar over files and audio hours on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, files: int, audio_s: float) -> None:
        self.bar: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                transient=False,
            )  # fmt: skip
            self.files = self.bar.add_task("files", total=files)
            self.hours = self.bar.add_task("audio minutes", total=round(audio_s / 60, 1) or None)

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        if self.bar is None:
            yield
            return
        with self.bar:
            yield

    def advance(self, audio_s: float | None) -> None:
        if self.bar is not None:
            self.bar.advance(self.files)
            if audio_s:
                self.bar.advance(self.hours, round(audio_s / 60, 1))


class ServiceError(Exception):
    """An error answer of the service (the job routes are called with httpx, not BentoML's client)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:200]}")
        self.error_code, self.message = status, text


def checked(r: Any) -> Any:
    """An httpx response, or ServiceError for the service's error answer."""
    if r.status_code >= 400:
        raise ServiceError(r.status_code, r.text)
    return r


def bearer(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


async def by_job(http: Any, item: Item, request: Request, ledger: Ledger) -> Any:
    """One file as a job: submitted once (its id kept in the ledger, so a rerun after an interruption waits for
    the same job), its status polled until it ends, then its answer: a dict for JSON, else the text."""
    task_id = ledger.waiting_job(item.source, request.options)
    if task_id and (await http.get("/transcribe_job/status", params={"task_id": task_id})).status_code == 404:
        task_id = None  # expired or from another server: submit again
    if task_id is None:
        data = {"response_format": FORMATS[request.fmt][0]}
        data |= {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in request.fields.items()}

        async def submit() -> str:
            with item.source.open("rb") as f:
                r = checked(
                    await http.post("/transcribe_job/submit", files={"audio": (item.source.name, f)}, data=data)
                )
            submitted = str(r.json()["task_id"])
            ledger.remember_job(item.source, request.options, submitted)
            return submitted

        # Ctrl-C during a submit lets it finish and be recorded: the server has the job, a rerun waits for it
        submitting = asyncio.ensure_future(submit())
        try:
            task_id = await asyncio.shield(submitting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await submitting
            raise
    pause = 0.5
    while True:
        r = checked(await http.get("/transcribe_job/status", params={"task_id": task_id}))
        if r.json()["status"] != "in_progress":
            break
        await asyncio.sleep(pause)
        pause = min(5.0, pause * 1.5)
    r = checked(await http.get("/transcribe_job/get", params={"task_id": task_id}))
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text


async def transcribe_one(
    client: Any, http: Any, item: Item, request: Request, out_dir: Path, ledger: Ledger
) -> tuple[float | None, Failure | None]:
    """One file: the answer written atomically to its output. Retries refusals that say "later"."""
    response_format = FORMATS[request.fmt][0]
    for attempt in range(ATTEMPTS):
        try:
            if request.jobs:
                answer = await by_job(http, item, request, ledger)
            else:
                answer = await client.transcribe(audio=item.source, response_format=response_format, **request.fields)
        except Exception as exc:  # BentoML's client raises BentoMLException for HTTP errors, httpx's for transport
            status, code, message = error_of(exc)
            if status in RETRYABLE and attempt + 1 < ATTEMPTS:
                await asyncio.sleep(min(30.0, 2.0**attempt))
                continue
            return None, Failure(item.source, status, code, message)
        if isinstance(answer, dict):
            data = json.dumps(answer, ensure_ascii=False, indent=2).encode()
            duration = answer.get("duration_s")
            audio_s = float(duration) if isinstance(duration, (int, float)) else None
        else:
            data, audio_s = str(answer).encode(), None
        write_atomically(out_dir / item.output, data)
        return audio_s, None
    raise AssertionError("unreachable")


class Unusable(Exception):
    """The service did not answer /readyz with 200 in time, or refuses this caller (401: no key, or a wrong one)."""


async def wait_ready(url: str, timeout_s: float, token: str | None) -> None:
    """Ready, and this caller admitted: asked once here (BentoML's client polls /readyz without pausing, and says
    only that it could not fetch the schema when a key is missing)."""
    import httpx

    deadline, last = time.monotonic() + timeout_s, "no answer"
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                r = await client.get(url + "/readyz")
                if r.status_code == 200:
                    break
                last = f"/readyz answered {r.status_code}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__} {exc}".strip()
            if time.monotonic() >= deadline:
                raise Unusable(f"not ready after {timeout_s:g} s ({last})")
            await asyncio.sleep(0.5)
        r = await client.get(url + "/schema.json", headers=bearer(token))
        if r.status_code == 401:
            status, code, message = error_of(ServiceError(401, r.text))
            raise Unusable(f"{status} {code}: {message} (give the key with --token or $ASR_API_KEY)")


async def run(
    items: list[Item], request: Request, out_dir: Path, concurrency: int, ledger: Ledger, show_progress: bool
) -> Summary:
    import bentoml
    import httpx

    summary = Summary(files=len(items))
    started = time.monotonic()
    todo: list[tuple[Item, float | None]] = []
    for item in items:
        if ledger.done(item.source, item.output, request.options):
            summary.skipped += 1
        else:
            todo.append((item, probe_duration_s(item.source)))
    progress = Progress(show_progress and bool(todo), len(todo), sum(d or 0.0 for _, d in todo))
    queue: asyncio.Queue[tuple[Item, float | None]] = asyncio.Queue()
    for entry in todo:
        queue.put_nowait(entry)

    async def worker() -> None:
        # readiness was waited for once, below: BentoML's own wait polls /readyz without pausing
        client = bentoml.AsyncHTTPClient(
            request.url, token=request.token, timeout=request.timeout_s, server_ready_timeout=0
        )
        http = httpx.AsyncClient(base_url=request.url, headers=bearer(request.token), timeout=request.timeout_s)
        async with client, http:
            while True:
                try:
                    item, probed = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                answered, failure = await transcribe_one(client, http, item, request, out_dir, ledger)
                audio_s = answered if answered is not None else probed
                if failure is not None:
                    summary.failures.append(failure)
                else:
                    ledger.record(item.source, item.output, request.options, audio_s)
                    summary.done += 1
                    summary.audio_s += audio_s or 0.0
                progress.advance(audio_s)

    if todo:
        await wait_ready(request.url, request.wait_ready_s, request.token)
    loop = asyncio.get_running_loop()
    with progress.shown():
        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(todo)))]

        def interrupt() -> None:  # Ctrl-C: calls in flight are cancelled (the service drops their work)
            summary.interrupted = True
            for task in workers:
                task.cancel()

        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers off the main thread
            loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            outcomes = await asyncio.gather(*workers, return_exceptions=True)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
    summary.wall_s = time.monotonic() - started
    for outcome in outcomes:
        if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome  # a worker that could not work at all (the service unreachable): the command says so
    return summary
