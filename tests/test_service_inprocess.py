"""The fast path in process (BentoML's ASGI app with the recognizer as a local instance; no batching)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests import speech
from tests.audio_files import encode
from tests.conftest import Exported

pytestmark = pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")


@pytest.fixture(scope="module")
def client(tiny_bpe: Exported) -> Iterator[TestClient]:
    os.environ.update(ASR_MODEL=tiny_bpe.tag, ASR_DEVICE="cpu", ASR_MAX_UPLOAD_MB="1")
    try:
        from service.service import Transcriber

        with TestClient(Transcriber.to_asgi()) as c:
            yield c
    finally:
        for key in ("ASR_MODEL", "ASR_DEVICE", "ASR_MAX_UPLOAD_MB"):
            os.environ.pop(key, None)


def test_transcribe_equals_nemo(client: TestClient, tiny_bpe: Exported, tmp_path: Path) -> None:
    wav = encode(speech.hindi(speech.SENTENCES[3]), 16000)
    (tmp_path / "a.wav").write_bytes(wav)
    expected = tiny_bpe.model.transcribe([str(tmp_path / "a.wav")], batch_size=1, verbose=False)[0]
    expected_text = getattr(expected, "text", expected)
    r = client.post("/transcribe", files={"audio": ("a.wav", wav, "audio/wav")}, data={"timestamps": "true"})
    assert r.status_code == 200 and r.json()["text"] == expected_text and r.json()["words"] is not None


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ({"audio": ("a.wav", b"", "audio/wav")}, {}, 400, "empty_audio"),
        ({"sound": ("a.wav", b"RIFF", "audio/wav")}, {}, 400, "bad_request"),
        ({"audio": ("a.wav", b"x" * (2 << 20), "audio/wav")}, {}, 413, "upload_too_large"),
        ({"audio": ("a.txt", b"plain words", "text/plain")}, {}, 415, "unsupported_format"),
    ],
)
def test_errors_in_process(client: TestClient, files: Any, data: Any, status: int, code: str) -> None:
    r = client.post("/transcribe", files=files, data=data)
    assert r.status_code == status and r.json() == {"error": code, "message": r.json()["message"]}


def test_batcher_never_corks_a_lone_request(client: TestClient) -> None:
    """Once service.service is imported, BentoML's batcher learns no waiting time from past batches (see
    service.patches._never_cork): after a burst whose batches waited seconds, a lone request is dispatched at
    once. (Stock BentoML 1.4.39 holds each of these lone requests ~36 ms on average here, patched ~1 ms.)"""
    import asyncio
    import time

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


def test_answered_requests_are_not_kept_by_the_timeout_timer(client: TestClient) -> None:
    """BentoML's TimeoutMiddleware armed a timer per request that held the request's context variables for
    the whole timeout (see service.patches._release_timeout_timers): nothing of an answered request may stay
    reachable."""
    import asyncio
    import contextvars
    import gc
    import weakref

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
