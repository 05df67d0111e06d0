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


@pytest.mark.parametrize("gpu", [False, True])
def test_segments_in_flight_follow_where_the_recognizer_landed(client: TestClient, gpu: bool) -> None:
    """ASR_DEVICE=auto is decided in the recognizer: when its status says it runs on a GPU, the entry keeps up to
    ASR_BATCH_MAX_SIZE (16) segments of one request in flight, as with ASR_DEVICE=cuda; on the CPU 4."""
    import dataclasses
    import gc
    import threading
    import time

    from service.catalog import Catalog

    service = next(o for o in gc.get_objects() if type(o).__name__ == "Transcriber" and hasattr(o, "policy"))
    engine = service.recognizer.engines[0]
    catalog, infer, on_gpu = service.policy.catalog, engine.infer, engine.on_gpu
    # 2-s segments, so that a 40-s request has more than 16
    short = [dataclasses.replace(m, segment_samples=2 * 16000) for m in catalog.models]
    service.policy.catalog = Catalog(short)
    active, peak, lock = [0], [0], threading.Lock()

    def counted(batch: list[Any]) -> Any:
        with lock:
            active[0] += len(batch)
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        try:
            return infer(batch)
        finally:
            with lock:
                active[0] -= len(batch)

    engine.infer, engine.on_gpu, service.recognition.ready = counted, gpu, False  # status is asked again
    try:
        audio, _ = speech.joined(speech.SENTENCES * 2, pause_s=0.6)
        wav = encode(audio[: 40 * 16000], 16000, "FLAC")  # under the fixture's 1-MB upload limit
        r = client.post("/transcribe", files={"audio": ("a.wav", wav, "audio/wav")})
        assert r.status_code == 200 and len(r.json()["segments"]) > 16
    finally:
        engine.infer, engine.on_gpu, service.policy.catalog, service.recognition.ready = infer, on_gpu, catalog, False
    assert peak[0] == (16 if gpu else 4)


@pytest.mark.parametrize(("route", "field"), [("/transcribe", "audio"), ("/v1/audio/transcriptions", "file")])
def test_each_upload_is_parsed_once_and_never_written_to_a_file(
    client: TestClient, route: str, field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request guard parses the multipart form (to refuse bad ones with 400) and hands that form to the
    route: no second parse by BentoML or Starlette, and no temporary file of the upload (BentoML writes one for a
    `Path` argument)."""
    from bentoml._internal.context import request_tempdir_pool
    from starlette.formparsers import MultiPartParser

    parses, temp_dirs = [], []
    parse, acquire = MultiPartParser.parse, request_tempdir_pool.acquire

    async def counted_parse(self: Any) -> Any:
        parses.append(1)
        return await parse(self)

    def counted_acquire() -> str:
        temp_dirs.append(1)
        return acquire()

    monkeypatch.setattr(MultiPartParser, "parse", counted_parse)
    monkeypatch.setattr(request_tempdir_pool, "acquire", counted_acquire)
    wav = encode(speech.hindi(speech.SENTENCES[1]), 16000)
    long_name = "ध्वनि" * 40 + ".wav"  # over 200 bytes: BentoML's temp file named after it would fail
    r = client.post(route, files={field: (long_name, wav, "audio/wav")}, data={"response_format": "json"})
    assert r.status_code == 200 and r.json()["text"]
    assert (len(parses), len(temp_dirs)) == (1, 0)
