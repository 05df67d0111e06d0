"""Fixes to BentoML 1.4.39's serving path and to the worker processes, applied when service.py is imported
(in every worker). Each one is a measured problem; tests/test_service_inprocess.py checks the BentoML ones."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.responses import JSONResponse


def apply() -> None:
    _limit_malloc_arenas()
    _never_cork()
    _release_timeout_timers()


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


def _release_timeout_timers() -> None:
    """BentoML 1.4.39's TimeoutMiddleware (traffic.timeout) arms a timer for every request with
    `loop.call_later(timeout, ...)` and never cancels it. A timer keeps a copy of the request's context
    variables (its tracing spans, BentoML's request context), so every request stayed in memory for the whole
    timeout (300 s here) after it was answered: the "memory growth under load" of docs/reliability.md. Same
    middleware here, but its timer is armed in an empty context and cancelled when the request ends."""
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

        fut = asyncio.ensure_future(self.app(scope, receive, _send))
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
