"""The patches of BentoML 1.4's internals (service/patches.py), each against the problem it fixes, plus the
guard that skips a patch whose BentoML code is not what it was written for. Plain unit tests: no server, no
model, no speech. (A changed BentoML served end to end: tests/test_bentoml_range.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import os
import sys
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


def test_every_patch_applies_to_the_installed_bentoml() -> None:
    """Whichever 1.4 release is installed (CI runs this on the newest and on 1.4.39), its code is what every
    patch was written for: all applied, none skipped."""
    assert {p.name: "applied" for p in patches.PATCHES} == patches.STATUS
    assert [p.name for p in patches.PATCHES if patches.mismatch(p)] == []
    assert {r["status"] for r in patches.report()} == {"applied"}


def test_a_patch_whose_source_changed_is_skipped_with_what_is_lost() -> None:
    """The guard reads every source a patch relies on, not only what it replaces: a changed method the patch
    only calls (CorkDispatcher._get_inputs, for dropping abandoned jobs) skips it; a missing one too."""
    patch = next(p for p in patches.PATCHES if p.name == "drop_abandoned_jobs")
    called = "bentoml._internal.marshal.dispatcher.CorkDispatcher._get_inputs"
    assert called in patch.relies_on and called in patches.FINGERPRINTS
    why = patches.mismatch(patch, {**patches.FINGERPRINTS, called: "0000000000000000"})
    assert why.startswith(f"BentoML's {called} is not the code it was written for (source ")
    gone = patches.Patch("x", ("bentoml._internal.marshal.dispatcher.NoSuchThing",), "nothing")
    assert "source missing" in patches.mismatch(gone, {"bentoml._internal.marshal.dispatcher.NoSuchThing": "0" * 16})
    every = {name for p in patches.PATCHES for name in p.relies_on}
    assert every == set(patches.FINGERPRINTS)  # each fingerprint guards a patch, and each reliance has one


def test_a_changed_bentoml_starts_with_one_warning_per_skipped_patch(tmp_path: Any) -> None:
    """Importing service.service (what `bentoml serve` does at start) on a BentoML whose CorkDispatcher.
    inbound_call differs: no exit, one warning line naming the patch and what is lost; the other patches apply."""
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(CHANGED_BENTOML, encoding="utf-8")
    code = "import service.service\nfrom service import patches\nprint(patches.STATUS['drop_abandoned_jobs'])\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: BentoML patch")]
    assert len(warnings) == 1 and "'drop_abandoned_jobs' skipped" in warnings[0], run.stderr[-2000:]
    assert "abandoned requests' segments will run" in warnings[0]
    assert run.stdout.split() == ["skipped"]


# A newer BentoML, as far as the guard can tell: one method the drop-abandoned-jobs patch replaces has other code
# (here it delegates to the original, so BentoML still works).
CHANGED_BENTOML = """
import bentoml._internal.marshal.dispatcher as dispatcher

_original = dispatcher.CorkDispatcher.inbound_call


async def inbound_call(self, data):  # not BentoML 1.4.39's source
    return await _original(self, data)


dispatcher.CorkDispatcher.inbound_call = inbound_call
"""


def test_batcher_never_corks_a_lone_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once patched, BentoML's batcher learns no waiting time from past batches (patches._never_cork): after a
    burst whose batches waited seconds, a lone request is dispatched at once. Counted, not timed: the
    dispatcher's loop "corks" a request by sleeping a tick while the batch slot is free and the queue holds
    less than a batch; the lone requests must see no such tick. (Stock BentoML 1.4.39 learns a 40-ms wait here
    and corks the ten lone requests for 296 ticks in all; the test was run against it.)"""
    from bentoml._internal.marshal import dispatcher as module
    from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer

    optimizer = Optimizer(10.0)
    for n in (1, 4, 8, 16, 8, 4, 2, 16, 12):
        optimizer.log_outbound(n=n, wait=3.0, duration=0.2 * n)
    optimizer.trigger_refresh()
    assert optimizer.wait == 0 and optimizer.o_a > 0

    corks = [0]
    counting = [False]

    class Asyncio:  # the dispatcher module's `asyncio`, counting the ticks its loop sleeps with the slot free
        def __getattr__(self, name: str) -> Any:
            return getattr(asyncio, name)

        def sleep(self, delay: float) -> Any:
            caller = sys._getframe(1).f_locals.get("self")
            if counting[0] and isinstance(caller, CorkDispatcher) and not caller._sema.is_locked():
                corks[0] += 1
            return asyncio.sleep(delay)

    monkeypatch.setattr(module, "asyncio", Asyncio())

    async def go() -> float:
        async def callback(items: Any) -> list[int]:
            await asyncio.sleep(0.005 * len(items))  # a model that takes 5 ms an item
            return [1] * len(items)

        dispatcher: Any = CorkDispatcher(
            max_latency_in_ms=10_000, max_batch_size=16, fallback=lambda: None, get_batch_size=lambda _: 1
        )
        fn = dispatcher(callback)
        # Bursts of 48 at once, six times: BentoML's first 11 calls train (and take whole batches), then the
        # batches' waits are learned (the second and third batch of a burst wait for the first)
        for _ in range(6):
            await asyncio.gather(*[fn(1) for _ in range(48)])
        assert any(wait > 0.05 for _, _, wait in dispatcher.optimizer.o_stat)  # batches that waited were seen
        # BentoML refreshes what it learned at most every 5 s (Optimizer.INTERVAL_REFRESH_PARAMS): now, as a
        # server busy for longer would have
        dispatcher.optimizer.trigger_refresh()
        counting[0] = True
        for _ in range(10):  # then lone requests, one after another
            await fn(1)
            while dispatcher._sema.is_locked():  # the slot is given back just after the answer
                await asyncio.sleep(0)
        return float(dispatcher.optimizer.wait)

    learned = asyncio.run(go())
    assert learned == 0 and corks[0] == 0, (learned, corks[0])


@pytest.mark.parametrize("allowed", [1, 2])
def test_a_batch_queue_runs_as_many_batches_at_once_as_allowed(allowed: int) -> None:
    """patches._concurrent_batches: with concurrent_batches=2 (the recognizer's CPU lanes) a queue hands out a
    second batch while one runs; with 1, BentoML's own one at a time. (Stock BentoML 1.4.39: always 1.)"""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    async def go() -> float:
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
