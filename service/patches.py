"""Fixes to BentoML 1.4.39's serving path and to the worker processes, applied when service.py is imported
(in every worker). Each one is a measured problem; tests/test_patches.py shows each (stock BentoML fails it).

Every patch replaces code of one BentoML release. Before anything is patched, `apply()` checks the installed
BentoML's version and the source of every function a patch replaces or wraps (a SHA-256 of
`inspect.getsource`); on any difference the service refuses to start with one line naming the function,
instead of failing at request time. Upgrading BentoML means re-reading each patch against the new code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse

BENTOML_VERSION = "1.4.39"
# The code each patch was written for: qualified name -> first 16 hex digits of sha256(inspect.getsource(...)).
REPLACED = {
    "bentoml._internal.marshal.dispatcher.Optimizer.trigger_refresh": "f87e72c1c3570482",
    "bentoml._internal.marshal.dispatcher.CorkDispatcher.train_optimizer": "311114504896b3fb",
    "bentoml._internal.marshal.dispatcher.CorkDispatcher.inbound_call": "2c6278ea11900d05",
    "bentoml._internal.marshal.dispatcher.CorkDispatcher.__init__": "5a214027709d1a3d",
    "_bentoml_sdk.io_models.IOMixin.mime_type": "babaa4832e83deb7",
    "bentoml._internal.server.http.traffic.TimeoutMiddleware.__call__": "fd8b9e3da28ed2b4",
    "bentoml._internal.utils.filesystem.TempfilePool.release": "7ac0cb70fe0a86e8",
    "bentoml._internal.context.ServiceContext.in_request": "17f83b1eb008c3c4",
    "bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware.__init__": "3a7dbff10bd460e2",
    "bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware.__call__": "b7dc25ae0208d7b2",
}


class PatchMismatch(RuntimeError):
    """The installed BentoML is not the code these patches were written for."""


def _resolve(qualified: str) -> Any:
    import importlib

    parts = qualified.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(qualified)


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def check(version: str | None = None, replaced: dict[str, str] | None = None) -> None:
    """Raise PatchMismatch unless BentoML is the release and code the patches were written for."""
    import bentoml

    version = version or bentoml.__version__
    if version != BENTOML_VERSION:
        raise PatchMismatch(
            f"service/patches.py was written for BentoML {BENTOML_VERSION}, but {version} is installed: "
            f"install bentoml=={BENTOML_VERSION} or re-check every patch against the new release"
        )
    for name, digest in (replaced or REPLACED).items():
        try:
            found = fingerprint(_originals.get(name) or _resolve(name))
        except (ImportError, AttributeError, OSError, TypeError):
            found = "missing"
        if found != digest:
            raise PatchMismatch(
                f"BentoML's {name} is not the code service/patches.py was written for "
                f"(source {found}, expected {digest}): re-check the patch before serving"
            )


_applied = False
_originals: dict[str, Any] = {}  # the replaced code, kept so that check() still reads it once patched
# The paths the service answers, for BentoML's HTTP metrics labels (service.py fills it in): any other path is
# counted under "other". Entries ending in "/" (but "/" itself) are prefixes of a family (/v1/models/{id}).
known_paths: set[str] = set()
# Batches one batch queue may have running at once (service.py: the recognizer's CPU lanes); 1 is BentoML's own.
concurrent_batches = 1
# Called with the number of segments dropped from a batch queue because their caller went away.
on_dropped: Callable[[int], None] = lambda count: None  # noqa: E731


def apply() -> None:
    global _applied
    if _applied:
        return
    check()
    _originals.update({name: _resolve(name) for name in REPLACED})
    _limit_malloc_arenas()
    _never_cork()
    _concurrent_batches()
    _cache_mime_types()
    _drop_abandoned_jobs()
    _release_timeout_timers()
    _remove_request_dirs()
    _fold_unknown_paths()
    _applied = True


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


def _cache_mime_types() -> None:
    """BentoML 1.4.39 works out the media type of every answer of an API returning a list or a plain value from
    its type's JSON schema, built anew each time (a pydantic TypeAdapter and its schema): ~0.6 ms of the
    recognizer's CPU per batch call, for a result that never changes. Here it is worked out once per type."""
    from _bentoml_sdk.io_models import IOMixin

    found: dict[type, str] = {}
    mime_type = IOMixin.mime_type.__func__  # type: ignore[attr-defined]

    def cached(cls: type) -> str:
        if cls not in found:
            found[cls] = mime_type(cls)
        return found[cls]

    IOMixin.mime_type = classmethod(cached)  # type: ignore[method-assign,assignment]


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
