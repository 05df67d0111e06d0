"""Uploads of any size: a body up to forms.SPOOL_BYTES stays in memory, a larger one (and the upload in it) waits
in an unnamed temporary file, and the pipeline decodes it from there: what the entry process holds does not grow
with the upload."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import tempfile
import tracemalloc
from typing import Any

import httpx
import numpy as np
import pytest

from service.api.forms import SPOOL_BYTES, FormRoute, check_form, upload_data
from service.api.guard import RequestGuard
from service.pipeline.client import Readiness

MB = 2**20


def multipart(field: str, payload: bytes) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/transcribe", files={field: ("a.wav", payload, "audio/wav")})
    return request.read(), request.headers["content-type"]


def through_the_guard(body: bytes, content_type: str, status: int = 200) -> tuple[dict[str, Any], int]:
    """POST /transcribe of `body` through a RequestGuard whose door reads what upload_data hands it (in 1-MB
    pieces): what it got (or the error body), and tracemalloc's peak while the guard received, parsed and
    answered."""
    from starlette.responses import JSONResponse

    seen: dict[str, Any] = {}

    async def door(scope: Any, form: Any) -> Any:
        data = await upload_data(form["audio"])
        seen["in_memory"] = isinstance(data, bytes)
        digest = hashlib.sha256()
        if isinstance(data, bytes):
            digest.update(data)
        else:
            with data:
                while piece := data.read(MB):
                    digest.update(piece)
        seen["sha256"] = digest.hexdigest()
        return JSONResponse({"ok": True})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the door answers, not the app")

    route = FormRoute("audio", door, frozenset({"audio"}))
    guard = RequestGuard(app, 1 << 30, {"/transcribe": route}, 4, 60, Readiness())
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/transcribe", "headers": headers, "query_string": b""}
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    tracemalloc.start()
    try:
        asyncio.run(guard(scope, receive, send))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent[0]["status"] == status, sent
    if status != 200:
        seen.update(json.loads(sent[1]["body"]), headers=dict(sent[0]["headers"]))
    return seen, peak


def test_a_large_upload_waits_on_disk_and_memory_stays_flat() -> None:
    """A 96-MB upload through the guard, its form and the door: the door gets a file holding exactly the upload,
    and the peak of Python's allocations (tracemalloc: bytes, buffers, numpy) stays under 4 x SPOOL_BYTES (the
    body's and the part's in-memory spools before each rolls to disk, and the rollover's copy). Holding the body
    in memory (as before) peaks at twice the upload or more: body, a copy for the parser, the parsed part."""
    payload = np.random.default_rng(0).bytes(96 * MB)
    body, content_type = multipart("audio", payload)
    seen, peak = through_the_guard(body, content_type)
    print(f"96-MB upload: peak of Python allocations {peak / MB:.1f} MB")
    assert not seen["in_memory"] and seen["sha256"] == hashlib.sha256(payload).hexdigest()
    assert peak < 4 * SPOOL_BYTES, f"{peak / MB:.0f} MB"


def test_a_small_upload_stays_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload up to SPOOL_BYTES (here 6 MB: over Starlette's own 1-MB threshold) is never written to disk:
    no spool rolls over, and the door gets the bytes."""
    rollovers: list[int] = []
    rollover = tempfile.SpooledTemporaryFile.rollover

    def counted_rollover(self: Any) -> None:
        rollovers.append(1)
        rollover(self)

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", counted_rollover)
    payload = np.random.default_rng(1).bytes(6 * MB)
    seen, _ = through_the_guard(*multipart("audio", payload))
    assert seen["in_memory"] and seen["sha256"] == hashlib.sha256(payload).hexdigest()
    assert rollovers == []


def test_the_form_is_read_from_a_file_in_pieces() -> None:
    """check_form parses a body handed as a file (the guard's spool), from its start whatever its position."""
    payload = b"RIFF" + bytes(range(256)) * 5000
    body, content_type = multipart("audio", payload)
    scope = {"type": "http", "headers": [(b"content-type", content_type.encode())]}

    async def door(scope: Any, form: Any) -> Any:
        raise AssertionError

    async def parse() -> bytes:
        route = FormRoute("audio", door, frozenset({"audio"}))
        problem, _, form = await check_form(scope, spool, content_type, route)
        assert problem == "" and form is not None
        try:
            return bytes(await form["audio"].read())
        finally:
            await form.close()

    with tempfile.SpooledTemporaryFile() as spool:
        spool.write(body)  # left at its end, as the guard leaves it
        assert asyncio.run(parse()) == payload


def test_a_full_disk_is_a_503_not_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the temporary disk is full (the body's spool, or the parser's spool of the upload), the answer is
    503 `overloaded` with Retry-After, saying so: not the client's fault (400), not a crash (500)."""
    from starlette.formparsers import MultiPartParser

    write = tempfile.SpooledTemporaryFile.write

    def full_once_rolled(self: Any, data: Any) -> int:
        if getattr(self, "_rolled", False):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, data)

    body, content_type = multipart("audio", np.random.default_rng(2).bytes(20 * MB))
    with monkeypatch.context() as m:
        m.setattr(tempfile.SpooledTemporaryFile, "write", full_once_rolled)
        seen, _ = through_the_guard(body, content_type, 503)
    assert seen["error"] == "overloaded" and "disk" in seen["message"] and b"retry-after" in seen["headers"]

    async def full(self: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MultiPartParser, "parse", full)
    seen, _ = through_the_guard(*multipart("audio", b"RIFF" * 10), 503)
    assert seen["error"] == "overloaded" and "disk" in seen["message"]
