"""Work nobody waits for stops: a request whose client goes away before its answer starts is cancelled (its
decoding stops at the next block, its segments not yet run leave the batch queue), in the entry and in the
recognizer alike."""

from __future__ import annotations

import asyncio
import logging

import anyio

from service.api.replies import ASGIApp, Message, Receive, Scope, Send

DISCONNECT: Message = {"type": "http.disconnect"}


async def run_watching(app: ASGIApp, scope: Scope, receive: Receive, send: Send, body: bytes | None = None) -> None:
    """Run the app, and cancel it when the client goes away before its response starts: work nobody waits
    for stops (decoding at its next block, segments not yet run leave the batch queue). `body`: the request
    body already read (the guard buffers it), handed to the app once; None: the app reads it itself.

    Once the body is in, only the watcher reads the server's `receive` (it answers when the client
    disconnects or the response is complete); the app's later reads wait for the watcher's verdict."""
    pending = [] if body is None else [body]
    body_in, gone = anyio.Event(), anyio.Event()
    if body is not None:
        body_in.set()
    started = False

    async def app_receive() -> Message:
        if pending:  # handed over once, then let go of (BentoML keeps request objects alive for a while)
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        if body_in.is_set():
            await gone.wait()
            return DISCONNECT
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
        elif not message.get("more_body", False):
            body_in.set()
        return message

    async def app_send(message: Message) -> None:
        nonlocal started
        started = True
        await send(message)

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await body_in.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            if not started:
                tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await app(scope, app_receive, app_send)
        tg.cancel_scope.cancel()


class AbandonedCallLog(logging.Filter):
    """BentoML turns a batch call cancelled because its caller went away (the client hung up, the request timed
    out, or another segment of the same request was refused) into `ServiceUnavailable("process is overloaded")`
    and logs it as an ERROR with two tracebacks, once per segment. Dropped: the entry's line for the request
    says what happened to it (client_gone, timeout, overloaded)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and isinstance(exc.__context__, asyncio.CancelledError))


class CancelOnDisconnect:
    """For the recognizer: a call whose caller (the entry) has gone is cancelled, so its segments leave the
    batch queue before they run (see patches._drop_abandoned_jobs)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            await run_watching(self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)
