"""What the service changes inside BentoML 1.4, applied when service.py is imported (in every process). Each
change answers a measured problem (docs/bentoml-patches.md: the problem, BentoML's issue, the minimal upstream
change); tests/test_patches.py shows each (stock BentoML fails it).

Every change is guarded by the source it relies on: the SHA-256 of `inspect.getsource` of every BentoML
function, method and class it replaces, wraps, reads or calls. A change whose sources all match is applied; one
whose source differs (a newer BentoML) is skipped with one warning line naming it and the behaviour lost, and
`POST /status` lists it as skipped: the service still starts and answers correctly, without that change. No
BentoML version is checked: any 1.4 release whose code these match gets every change.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

_D = "bentoml._internal.marshal.dispatcher."
_TRAFFIC = "bentoml._internal.server.http.traffic."
_APP = "_bentoml_impl.server.app.ServiceAppFactory."


@dataclass(frozen=True)
class Patch:
    name: str
    relies_on: tuple[str, ...]  # qualified names of the BentoML code it replaces, wraps, reads or calls
    lost: str  # what the service does without it
    install: Callable[[], None] | None = None  # None: service.py applies it where it builds the services


# The source each change was written against: qualified name -> first 16 hex digits of sha256(getsource(...)),
# the same for BentoML 1.4.39 and 1.4.40.
FINGERPRINTS = {
    _D + "Optimizer.__init__": "acf2d03cbbc941e3",
    _D + "Optimizer.trigger_refresh": "f87e72c1c3570482",
    _D + "NonBlockSema": "83ea37b766b1bf2d",
    _D + "Job": "2718b4d55793d8d7",
    _D + "CorkDispatcher.__init__": "5a214027709d1a3d",
    _D + "CorkDispatcher.__call__": "3e2f9292f85395f7",
    _D + "CorkDispatcher._loop": "072566421b2a7c3d",
    _D + "CorkDispatcher._wake_event": "14a792e17f7b019c",
    _D + "CorkDispatcher.train_optimizer": "311114504896b3fb",
    _D + "CorkDispatcher.controller": "dafc788663463402",
    _D + "CorkDispatcher.inbound_call": "2c6278ea11900d05",
    _D + "CorkDispatcher.outbound_call": "d380666220b880ef",
    _D + "CorkDispatcher._get_inputs": "b8ca45c90a0f5c76",
    _D + "CorkDispatcher.split_job": "0adc9fb8c1b42bcd",
    _TRAFFIC + "TimeoutMiddleware.__init__": "657435a0bd7f971c",
    _TRAFFIC + "TimeoutMiddleware._set_timer_out": "adfa8eb6f3b2de7d",
    _TRAFFIC + "TimeoutMiddleware.__call__": "fd8b9e3da28ed2b4",
    _TRAFFIC + "MaxConcurrencyMiddleware.__call__": "39242bfcfef6f48a",
    "bentoml._internal.utils.filesystem.TempfilePool": "50729c5a9dd04025",
    "bentoml._internal.context.request_temp_dir": "1bba63c0aeaf76b8",
    "bentoml._internal.context.ServiceContext.in_request": "17f83b1eb008c3c4",
    "bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware.__init__": "3a7dbff10bd460e2",
    "bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware.__call__": "b7dc25ae0208d7b2",
    "_bentoml_sdk.service.factory.Service.openapi_spec": "38e7c8ebe6734bda",
    _APP + "openapi_spec_view": "ca9d789d8db5aba2",
    "bentoml._internal.bento.bento.Bento.create": "3933ace9b991b2f8",
    _APP + "api_endpoint_wrapper": "18842e99e6086c0f",
    "bentoml._internal.server.http_app.log_exception": "8e37ab2b4433dff1",
}


def _resolve(qualified: str) -> Any:
    import importlib

    parts = qualified.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = inspect.getattr_static(obj, attr) if inspect.isclass(obj) else getattr(obj, attr)
        return obj
    raise ImportError(qualified)


def fingerprint(obj: Any) -> str:
    """The first 16 hex digits of the SHA-256 of the object's source (a property's getter, a classmethod's
    function)."""
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    if isinstance(obj, functools.cached_property):
        obj = obj.func
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def source_of(qualified: str) -> str:
    """The fingerprint of the installed BentoML's code under that name ("missing" when it has none)."""
    try:
        return fingerprint(_originals.get(qualified) or _resolve(qualified))
    except (ImportError, AttributeError, OSError, TypeError):
        return "missing"


def mismatch(patch: Patch, fingerprints: dict[str, str] | None = None) -> str:
    """Why `patch` cannot be applied to the installed BentoML ("" when every source it relies on matches)."""
    wanted = FINGERPRINTS if fingerprints is None else fingerprints
    for name in patch.relies_on:
        found = source_of(name)
        if found != wanted.get(name):
            return f"BentoML's {name} is not the code it was written for (source {found}, expected {wanted.get(name)})"
    return ""


_originals: dict[str, Any] = {}  # the code as found, kept so that checks still read it once patched
STATUS: dict[str, str] = {}  # patch name -> "applied" or "skipped"
REASONS: dict[str, str] = {}  # patch name -> why it was skipped
# The paths the service answers, for BentoML's HTTP metrics labels (service.py fills it in): any other path is
# counted under "other". Entries ending in "/" (but "/" itself) are prefixes of a family (/v1/models/{id}).
known_paths: set[str] = set()
# Batches one batch queue may have running at once (service.py: the recognizer's CPU lanes); 1 is BentoML's own.
concurrent_batches = 1
# Called with the number of segments dropped from a batch queue because their caller went away.
on_dropped: Callable[[int], None] = lambda count: None  # noqa: E731


def apply(fingerprints: dict[str, str] | None = None, announce: bool = True) -> dict[str, str]:
    """Apply every patch whose sources match (once per process); warn once per skipped patch. -> STATUS."""
    if STATUS:
        return STATUS
    for name in {n for patch in PATCHES for n in patch.relies_on}:
        with contextlib.suppress(ImportError, AttributeError):
            _originals.setdefault(name, _resolve(name))
    for patch in PATCHES:
        why = mismatch(patch, fingerprints)
        if why:
            STATUS[patch.name], REASONS[patch.name] = "skipped", why
            if announce:
                print(
                    f"warning: BentoML patch {patch.name!r} skipped: {why}; {patch.lost}", file=sys.stderr, flush=True
                )
            continue
        if patch.install is not None:
            patch.install()
        STATUS[patch.name] = "applied"
    return STATUS


def applied(name: str) -> bool:
    return STATUS.get(name) == "applied"


def report() -> list[dict[str, str]]:
    """Each patch, applied or skipped (with why and what is lost), for /status."""
    return [
        {"name": p.name, "status": "skipped", "lost": p.lost, "reason": REASONS.get(p.name, "not applied")}
        if STATUS.get(p.name) != "applied"
        else {"name": p.name, "status": "applied"}
        for p in PATCHES
    ]


def _never_cork() -> None:
    """BentoML 1.4.39's adaptive batching (CorkDispatcher) holds a lone request back for up to the mean wait
    of the last 50 batches, hoping for company. After a burst that mean is seconds, and every corked request
    keeps it up: one 10-s request took 370-590 ms in the recognizer after load against 230 ms for the session
    run (and its start-up training corks the first calls by up to 5 x 0.67 s). Here the recognizer takes
    whatever is queued whenever it is free (continuous batching): the learned wait is held at 0 and the
    training runs unbatched. The queue, its latency bound (503) and the batch metrics stay BentoML's."""
    from bentoml._internal.marshal import dispatcher

    refresh = dispatcher.Optimizer.trigger_refresh
    train = dispatcher.CorkDispatcher.train_optimizer

    def trigger_refresh(self: Any) -> None:
        refresh(self)  # type: ignore[no-untyped-call]
        self.wait = 0

    async def train_optimizer(self: Any, required: int, to_train: int, batch_size: int) -> None:
        await train(self, required, to_train, 1)

    dispatcher.Optimizer.trigger_refresh = trigger_refresh  # type: ignore[method-assign,assignment]
    dispatcher.CorkDispatcher.train_optimizer = train_optimizer  # type: ignore[method-assign,assignment]


def _concurrent_batches() -> None:
    """BentoML 1.4.39's batch queue runs one batch at a time. On the CPU the recognizer runs segments side by
    side in lanes (service/recognition/lanes.py): when a batch's last segment runs in one lane, the other lane
    idled while new segments waited in the queue for the whole batch to end (at 4 clients batches came as 1, 3,
    1, 3, ...: half of them a lone segment). Here a queue made without a shared semaphore lets
    `concurrent_batches` batches run at once; the lanes take their segments as they free."""
    from bentoml._internal.marshal import dispatcher

    init = dispatcher.CorkDispatcher.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if kwargs.get("shared_sema") is None and concurrent_batches > 1:
            self._sema = dispatcher.NonBlockSema(concurrent_batches)

    dispatcher.CorkDispatcher.__init__ = __init__  # type: ignore[method-assign]


def _drop_abandoned_jobs() -> None:
    """BentoML 1.4.39 runs every queued job, even one whose caller has gone: when the caller's handler is
    cancelled its future is cancelled, but the job stays in the queue and is batched and run anyway (a
    client that hung up on a 10-minute file kept the recognizer busy with its segments). Here a job leaves
    the queue the moment its future is cancelled, so it never runs; a job already in a running batch
    finishes. The latency bound's own cancellations are unchanged (BentoML pops those jobs first)."""
    import time

    from bentoml._internal.marshal import dispatcher

    def forget(self: Any, job: Any, future: Any) -> None:
        if not future.cancelled():
            return
        try:
            self._queue.remove(job)
        except ValueError:
            return  # already taken into a batch (it ran), or popped by the latency bound
        try:
            count = int(self.get_batch_size(job.data))
        except Exception:
            count = 1
        on_dropped(count)

    async def inbound_call(self: Any, data: Any) -> Any:
        job = dispatcher.Job(time.time(), data, self._loop.create_future())
        self._queue.append(job)
        job.future.add_done_callback(functools.partial(forget, self, job))
        async with self._wake_event:
            self._wake_event.notify_all()
        return await job.future

    dispatcher.CorkDispatcher.inbound_call = inbound_call  # type: ignore[method-assign]


def _release_timeout_timers() -> None:
    """BentoML 1.4.39's TimeoutMiddleware (traffic.timeout) arms a timer for every request with
    `loop.call_later(timeout, ...)` and never cancels it. A timer keeps a copy of the request's context
    variables (its tracing spans, BentoML's request context), so every request stayed in memory for the whole
    timeout (300 s here) after it was answered: the "memory growth under load" of docs/reliability.md. Same
    middleware here, but its timer is armed in an empty context and cancelled when the request ends. And it
    stops waiting when the app ends without answering (its client went away, see http.run_watching): stock,
    such a request stayed in the middleware until the timeout fired."""
    import asyncio
    import contextvars

    from bentoml._internal.server.http import traffic

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter, context=contextvars.Context())

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        def ended(_: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)

        fut = asyncio.ensure_future(self.app(scope, receive, _send))
        fut.add_done_callback(ended)
        try:
            await waiter
        except asyncio.TimeoutError:
            if fut.cancel():
                message = f"Not able to process the request in {self.timeout} seconds"
                await JSONResponse({"error": message}, status_code=504)(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()

    traffic.TimeoutMiddleware.__call__ = call  # type: ignore[method-assign]


def _remove_request_dirs() -> None:
    """BentoML 1.4.39 writes each upload to a file in a per-request directory (bentoml-request-*) taken from
    a pool, and on release empties the directory and keeps it for the next request: the directories outlive
    every request (one per request ever in flight at once) and the temporary directory never returns to what
    it was. Here a released directory is removed with what is in it."""
    import shutil

    from bentoml._internal.context import request_tempdir_pool

    def release(dir: str) -> None:
        shutil.rmtree(dir, ignore_errors=True)

    request_tempdir_pool.release = release  # type: ignore[method-assign]


def metrics_path(path: str) -> str:
    """The label BentoML's HTTP metrics get for a path: itself when the service answers it, its family for a
    family of paths, "other" for everything else."""
    if path in known_paths:
        return path
    family = next((p for p in known_paths if len(p) > 1 and p.endswith("/") and path.startswith(p)), None)
    return family + "{id}" if family else "other"


def _fold_unknown_paths() -> None:
    """BentoML 1.4.39's HTTP metrics middleware labels its series with the raw request path, so every path a
    scanner tries (/wp-login.php, /.env, ...) adds series to /metrics for good. Here the middleware sees the
    path folded by metrics_path(), and the app behind it the real one (BentoML's code is not copied: it is
    handed a copy of the request scope, and a small layer right behind it puts the real path back)."""
    from bentoml._internal.server.http import instruments

    middleware = instruments.RunnerTrafficMetricsMiddleware
    init, call = middleware.__init__, middleware.__call__

    class RealPath:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            real = scope.get("asr.real_path")
            await self.app({**scope, "path": real} if real else scope, receive, send)

    def patched_init(self: Any, app: Any, *args: Any, **kwargs: Any) -> None:
        init(self, RealPath(app), *args, **kwargs)

    async def patched_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"].startswith("http"):
            label = metrics_path(scope["path"])
            if label != scope["path"]:
                scope = {**scope, "path": label, "asr.real_path": scope["path"]}
        await call(self, scope, receive, send)

    middleware.__init__ = patched_init  # type: ignore[method-assign]
    middleware.__call__ = patched_call  # type: ignore[method-assign]


PATCHES = [
    Patch(
        "never_cork",
        (
            _D + "Optimizer.__init__",
            _D + "Optimizer.trigger_refresh",
            _D + "CorkDispatcher.train_optimizer",
            _D + "CorkDispatcher.controller",
        ),
        "a lone request may wait in the batch queue for company, up to the mean wait of recent batches",
        _never_cork,
    ),
    Patch(
        "concurrent_batches",
        (
            _D + "NonBlockSema",
            _D + "CorkDispatcher.__init__",
            _D + "CorkDispatcher.controller",
            _D + "CorkDispatcher.train_optimizer",
            _D + "CorkDispatcher.outbound_call",
        ),
        "the recognizer's batch queue runs one batch at a time: a CPU lane may idle while segments wait",
        _concurrent_batches,
    ),
    Patch(
        "drop_abandoned_jobs",
        (
            _D + "Job",
            _D + "CorkDispatcher.__init__",
            _D + "CorkDispatcher.__call__",
            _D + "CorkDispatcher._loop",
            _D + "CorkDispatcher._wake_event",
            _D + "CorkDispatcher.inbound_call",
            _D + "CorkDispatcher.controller",
            _D + "CorkDispatcher.train_optimizer",
            _D + "CorkDispatcher._get_inputs",
            _D + "CorkDispatcher.split_job",
        ),
        "abandoned requests' segments will run (a client that hung up still costs the recognizer its audio)",
        _drop_abandoned_jobs,
    ),
    Patch(
        "release_timeout_timers",
        (
            _TRAFFIC + "TimeoutMiddleware.__init__",
            _TRAFFIC + "TimeoutMiddleware._set_timer_out",
            _TRAFFIC + "TimeoutMiddleware.__call__",
        ),
        "each answered request stays in memory until BentoML's timeout fires; an abandoned request holds a "
        "concurrency slot until then (spurious 429s for healthy clients)",
        _release_timeout_timers,
    ),
    Patch(
        "remove_request_dirs",
        (
            "bentoml._internal.utils.filesystem.TempfilePool",
            "bentoml._internal.context.request_temp_dir",
            "bentoml._internal.context.ServiceContext.in_request",
        ),
        "BentoML's empty bentoml-request-* folders stay in the temporary directory until shutdown",
        _remove_request_dirs,
    ),
    Patch(
        "fold_unknown_paths",
        (
            "bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware.__init__",
            "bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware.__call__",
        ),
        "BentoML's HTTP metrics get a series for every path a client tries (/metrics grows without bound)",
        _fold_unknown_paths,
    ),
    Patch(
        "openapi_document",
        (
            "_bentoml_sdk.service.factory.Service.openapi_spec",
            _APP + "openapi_spec_view",
            "bentoml._internal.bento.bento.Bento.create",
        ),
        "/docs.json and the bento's apis/openapi.yaml are BentoML's own document (which fails on /transcribe's "
        "answer type)",
    ),
    Patch(
        "quiet_abandoned_calls",
        ("bentoml._internal.server.http_app.log_exception", _APP + "api_endpoint_wrapper"),
        "each batch call cancelled because its caller went away is logged as an ERROR with two tracebacks",
    ),
    Patch(
        "bentoml_error_bodies",
        (
            _APP + "api_endpoint_wrapper",
            _TRAFFIC + "MaxConcurrencyMiddleware.__call__",
            _TRAFFIC + "TimeoutMiddleware.__call__",
        ),
        "BentoML's own error bodies are wrapped whole in ours ({error, message}) instead of read field by field",
    ),
]
