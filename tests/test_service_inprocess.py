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
