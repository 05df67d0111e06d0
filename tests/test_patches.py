"""The patches of BentoML 1.4.39's internals (service/patches.py), each against the problem it fixes, plus the
guard that refuses to patch code it was not written for. Plain unit tests: no server, no model, no speech."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import os
import time
import weakref
from typing import Any

import pytest

from service import patches


@pytest.fixture(scope="module", autouse=True)
def patched() -> None:
    patches.apply()


@pytest.fixture(autouse=True)
def one_batch_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """BentoML's own one batch at a time, whatever an earlier import of service.service set for its lanes."""
    monkeypatch.setattr(patches, "concurrent_batches", 1)


def test_the_guard_refuses_other_releases_and_changed_code() -> None:
    patches.check()  # the installed BentoML is what the patches were written for
    with pytest.raises(patches.PatchMismatch, match=r"written for BentoML 1\.4\.39, but 1\.4\.40 is installed"):
        patches.check(version="1.4.40")
    name = next(iter(patches.REPLACED))
    with pytest.raises(patches.PatchMismatch, match=f"BentoML's {name} is not the code"):
        patches.check(replaced={name: "0000000000000000"})
    with pytest.raises(patches.PatchMismatch, match="source missing"):
        patches.check(replaced={"bentoml._internal.marshal.dispatcher.NoSuchThing": "0000000000000000"})


def test_the_guard_stops_the_service_with_one_line(tmp_path: Any) -> None:
    """A mismatch stops the import of service.service (the start) with one `error:` line, not a traceback."""
    import subprocess
    import sys

    code = "import service.patches as p; p.BENTOML_VERSION = '0.0.0'\nimport service.service\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ})
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: service/patches.py was written for BentoML 0.0.0, but 1.4.39"), run.stderr
    assert "Traceback" not in run.stderr


def test_batcher_never_corks_a_lone_request() -> None:
    """Once patched, BentoML's batcher learns no waiting time from past batches (patches._never_cork): after a
    burst whose batches waited seconds, a lone request is dispatched at once. (Stock BentoML 1.4.39 holds each
    of these lone requests ~36 ms on average here, patched ~1 ms.)"""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer

    optimizer = Optimizer(10.0)
    for n in (1, 4, 8, 16, 8, 4, 2, 16, 12):
        optimizer.log_outbound(n=n, wait=3.0, duration=0.2 * n)
    optimizer.trigger_refresh()
    assert optimizer.wait == 0 and optimizer.o_a > 0

    async def go() -> list[float]:
        called: list[float] = []

        async def callback(items: Any) -> list[int]:
            called.append(time.monotonic())
            await asyncio.sleep(0.05 * len(items))  # a model that takes 50 ms an item
            return [1] * len(items)

        dispatcher: Any = CorkDispatcher(
            max_latency_in_ms=10_000, max_batch_size=16, fallback=lambda: None, get_batch_size=lambda _: 1
        )
        fn = dispatcher(callback)
        for _ in range(2):  # a burst: 48 at once, twice
            await asyncio.gather(*[fn(1) for _ in range(48)])
        waits = []
        for _ in range(10):  # then lone requests, one after another
            sent = time.monotonic()
            await fn(1)
            waits.append(called[-1] - sent)
        return waits

    waits = asyncio.run(go())
    assert sum(waits) / len(waits) < 0.015, waits


@pytest.mark.parametrize("allowed", [1, 2])
def test_a_batch_queue_runs_as_many_batches_at_once_as_allowed(allowed: int) -> None:
    """patches._concurrent_batches: with concurrent_batches=2 (the recognizer's CPU lanes) a queue hands out a
    second batch while one runs; with 1, BentoML's own one at a time. (Stock BentoML 1.4.39: always 1.)"""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    async def go() -> int:
        running, most = 0, 0

        async def callback(items: Any) -> list[int]:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.1)
            running -= 1
            return list(items)

        dispatcher: Any = CorkDispatcher(
            max_latency_in_ms=60_000, max_batch_size=2, fallback=lambda: None, get_batch_size=lambda _: 1
        )
        fn = dispatcher(callback)
        assert await asyncio.gather(*[fn(i) for i in range(8)]) == list(range(8))
        return most

    saved, patches.concurrent_batches = patches.concurrent_batches, allowed
    try:
        assert asyncio.run(go()) == allowed
    finally:
        patches.concurrent_batches = saved


def test_a_job_whose_caller_went_away_never_runs() -> None:
    """Callers cancelled while their jobs wait in the queue (patches._drop_abandoned_jobs): their jobs leave the
    queue and are never run; the job already running finishes; the others are answered. (Stock BentoML 1.4.39
    runs all 12.)"""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    dropped: list[int] = []
    patches.on_dropped = dropped.append

    async def go() -> tuple[list[int], list[Any]]:
        ran: list[int] = []
        first_started = asyncio.Event()

        async def callback(items: Any) -> list[int]:
            first_started.set()
            await asyncio.sleep(0.2)
            ran.extend(items)
            return list(items)

        dispatcher: Any = CorkDispatcher(
            max_latency_in_ms=60_000, max_batch_size=1, fallback=lambda: "cancelled", get_batch_size=lambda _: 1
        )
        fn = dispatcher(callback)
        tasks = [asyncio.ensure_future(fn(i)) for i in range(12)]
        await first_started.wait()  # job 0 runs; 1..11 wait in the queue (one job per batch)
        for task in tasks[1:8]:
            task.cancel()  # their callers go away
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return ran, results

    try:
        ran, results = asyncio.run(go())
    finally:
        patches.on_dropped = lambda count: None
    assert ran == [0, 8, 9, 10, 11], ran
    assert results[0] == 0 and results[8:] == [8, 9, 10, 11]
    assert sum(dropped) == 7


def test_answered_requests_are_not_kept_by_the_timeout_timer() -> None:
    """BentoML's TimeoutMiddleware armed a timer per request that held the request's context variables for
    the whole timeout (patches._release_timeout_timers): nothing of an answered request may stay reachable."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    class Marker:
        pass

    current: contextvars.ContextVar[Marker] = contextvars.ContextVar("current")
    refs: list[weakref.ref[Marker]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def go() -> None:
        middleware = TimeoutMiddleware(app, timeout=300)

        async def request() -> None:
            marker = Marker()
            refs.append(weakref.ref(marker))
            current.set(marker)  # like a request's tracing span in BentoML's context variables
            sent: list[Any] = []

            async def send(message: Any) -> None:
                sent.append(message)

            await middleware({"type": "http"}, None, send)
            assert sent[0]["status"] == 200

        for _ in range(20):
            await asyncio.create_task(request())  # each request in its own task and context, as in uvicorn
        await asyncio.sleep(0.01)  # let the loop drop its last handles
        gc.collect()
        alive = sum(r() is not None for r in refs)
        assert alive == 0, f"{alive} of 20 answered requests still referenced"

    asyncio.run(go())


def test_a_request_that_ends_unanswered_leaves_the_timeout_middleware_at_once() -> None:
    """An app that returns without answering (its client went away) no longer keeps the middleware waiting
    for the whole timeout. (Stock: this call takes the full 3 s.)"""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.01)

    async def go() -> float:
        started = time.monotonic()
        await TimeoutMiddleware(app, timeout=3)({"type": "http"}, None, None)
        return time.monotonic() - started

    assert asyncio.run(go()) < 1.0


def test_request_directories_are_removed(tmp_path: Any) -> None:
    """A request's temporary directory is removed when the request ends (patches._remove_request_dirs);
    stock BentoML empties it and keeps it for reuse, so the temporary directory never returns to its
    baseline."""
    import starlette.requests
    from bentoml._internal import context

    pool = context.request_tempdir_pool
    saved = pool._new
    pool._new = lambda: __import__("tempfile").mkdtemp(prefix="bentoml-request-", dir=str(tmp_path))
    try:
        request = starlette.requests.Request({"type": "http", "method": "POST", "headers": [], "path": "/"})
        with context.ServiceContext().in_request(request):
            directory = context.request_temp_dir()
            open(os.path.join(directory, "upload.wav"), "wb").close()
        assert os.listdir(tmp_path) == []
    finally:
        pool._new = saved


def test_unknown_paths_fold_into_one_metrics_label() -> None:
    """BentoML labels its HTTP metrics with the raw path (patches._fold_unknown_paths): every path a scanner
    tries would add series for good. Known paths keep their label, families fold, the rest is "other"; the app
    behind the metrics middleware still gets the real path."""
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    patches.known_paths.update({"/", "/transcribe", "/v1/models/"})
    assert patches.metrics_path("/transcribe") == "/transcribe" and patches.metrics_path("/") == "/"
    assert patches.metrics_path("/v1/models/abc") == "/v1/models/{id}"
    assert patches.metrics_path("/wp-login.php") == patches.metrics_path("/.env") == "other"

    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])

    middleware = RunnerTrafficMetricsMiddleware(app)
    middleware._is_setup = True  # its Prometheus objects are not needed to see the labels

    labels: list[str] = []

    class Series:
        def labels(self, **kw: Any) -> Any:
            labels.append(kw.get("endpoint", ""))
            return self

        def set_to_current_time(self) -> None: ...

        def track_inprogress(self) -> Any:
            return contextlib.nullcontext()

    for name in ("metrics_last_request_timestamp", "metrics_request_in_progress", "metrics_request_total"):
        setattr(middleware, name, Series())
    asyncio.run(middleware({"type": "http", "path": "/wp-login.php"}, None, None))
    assert seen == ["/wp-login.php"] and "/wp-login.php" not in labels and "other" in labels


def test_an_api_answer_media_type_is_worked_out_once_per_type() -> None:
    """patches._cache_mime_types: the media type of a list-typed answer (the recognizer's batch results) comes
    from a JSON schema built once, not at every call (stock BentoML 1.4.39 builds it each time); the types
    still get BentoML's media types."""
    from _bentoml_sdk.io_models import IOMixin, IORootModel
    from pydantic import TypeAdapter

    class Results(IORootModel):  # type: ignore[misc]
        root: list[int]

    class Text(IORootModel):  # type: ignore[misc]
        root: str

    built = []
    schema = TypeAdapter.json_schema

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return schema(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(TypeAdapter, "json_schema", counted)
        assert [Results.mime_type() for _ in range(5)] == ["application/json"] * 5
        assert Text.mime_type() == "text/plain"
    assert len(built) == 2
    assert issubclass(Results, IOMixin)
