"""The OpenAPI document at /docs.json is true: a valid OpenAPI 3.1 document, and for every route, status and
media type it lists, a request that gets exactly that answer, whose body its schema accepts; and the other way
round, every answer these requests get is in the document."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import tomllib
from openapi_spec_validator import validate

from tests import speech
from tests.audio_files import encode, silent_flac
from tests.conftest import NO_GPU, Exported
from tests.server import ROOT, Server

pytestmark = pytest.mark.slow
RATE = 16000
TEXT_FORMATS = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


@pytest.fixture(scope="module")
def servers(tiny_bpe: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """One that admits one request at a time for 1 s (429 and 504 on demand), one that never turns ready (503:
    told to demand a GPU there is not)."""
    logs = tmp_path_factory.mktemp("openapi")
    limited = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "ASR_MAX_CONCURRENCY": "1", "ASR_TIMEOUT_S": "1"}
    with (
        Server(limited, logs / "limited.log") as served,
        Server({"ASR_MODEL": tiny_bpe.tag, **NO_GPU}, logs / "gpu.log", wait_ready=False) as broken,
    ):
        yield served, broken


Answer = tuple[str, str, int, httpx.Response]  # (documented path, method, status, response)


def exchanges(served: Server, broken: Server, tiny_bpe: Exported) -> list[Answer]:
    """One request per documented case."""
    speech_wav = encode(speech.hindi(speech.SENTENCES[1]), RATE)
    long_noise = encode(speech.noise(3540.0, 3, 0.05, rate=8000), 8000)  # 59 min: more than 1 s of work
    too_long = silent_flac(8000, 1, 4096.0)  # 68 min > ASR_MAX_DURATION_S
    short = encode(np.zeros(100, np.float32), RATE)
    url, name = served.url, tiny_bpe.tag.split(":")[0]
    answers: list[Answer] = []

    def upload(path: str, field: str, status: int, data: bytes, broken_one: bool = False, **fields: Any) -> None:
        base = broken.url if broken_one else url
        r = httpx.post(base + path, files={field: ("a.wav", data)}, data=fields, timeout=120)
        answers.append((path, "post", status, r))

    for path, field, bad_field in (
        ("/transcribe", "audio", {"model": "whisper-1"}),
        ("/v1/audio/transcriptions", "file", {"response_format": "xml"}),
    ):
        upload(path, field, 200, speech_wav)
        for fmt in TEXT_FORMATS:
            upload(path, field, 200, speech_wav, response_format=fmt)
        upload(path, field, 400, speech_wav, **bad_field)
        upload(path, field, 413, too_long)
        upload(path, field, 415, b"plain words")
        upload(path, field, 422, short)
        upload(path, field, 503, speech_wav, broken_one=True)
    upload("/transcribe", "audio", 200, speech_wav, timestamps="true")
    granularities = {"timestamp_granularities[]": ["word", "segment"]}
    upload("/v1/audio/transcriptions", "file", 200, speech_wav, response_format="verbose_json", **granularities)
    for path, field in (("/transcribe", "audio"), ("/v1/audio/transcriptions", "file")):
        answers += [(path, "post", r.status_code, r) for r in asyncio.run(busy(url + path, field, long_noise))]

    def get(path: str, status: int, documented: str = "", base: str = url) -> None:
        answers.append((documented or path, "get", status, httpx.get(base + path, timeout=30)))

    get("/v1/models", 200)
    get(f"/v1/models/{name}", 200, "/v1/models/{model_id}")
    get("/v1/models/whisper-1", 404, "/v1/models/{model_id}")
    get("/readyz", 200)
    get("/readyz", 503, base=broken.url)
    for path in ("/livez", "/healthz", "/metrics"):
        get(path, 200)
    answers.append(("/status", "post", 200, httpx.post(url + "/status", timeout=30)))
    return answers


async def busy(url: str, field: str, audio: bytes) -> list[httpx.Response]:
    """Two requests at once on a service that admits one for 1 s: one is refused (429) while the other is in, and
    that one times out (504). On a loaded machine the second may arrive after the first timed out (then both
    time out): pairs are sent until a 429 and a 504 have both been seen, five pairs at most."""
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(5):
            answers += await asyncio.gather(*[client.post(url, files={field: ("a.wav", audio)}) for _ in range(2)])
            if {429, 504} <= {r.status_code for r in answers}:
                break
    return answers


def test_the_document_says_what_the_server_does(servers: tuple[Server, Server], tiny_bpe: Exported) -> None:
    served, broken = servers
    doc = httpx.get(served.url + "/docs.json", timeout=30).json()
    validate(doc)  # a valid OpenAPI 3.1 document
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert doc["info"]["version"] == project["version"] and "NeMo" in doc["info"]["title"]

    documented = {
        (path, method, int(status), media.split(";")[0])
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        for media in response.get("content", {"": None})
    }
    seen = set()
    for path, method, status, r in exchanges(served, broken, tiny_bpe):
        media = r.headers.get("content-type", "").split(";")[0]
        assert r.status_code == status, (path, status, r.status_code, r.text[:300])
        response = doc["paths"][path][method]["responses"][str(status)]
        content = response.get("content", {})
        key = media if media in content else ""
        assert key or not content, f"{path} {status}: {media} is not documented ({list(content)})"
        if media == "application/json":
            # "#/components/..." references resolve in the schema's own root
            schema = {"components": doc["components"], **content[media]["schema"]}
            jsonschema.Draft202012Validator(schema).validate(r.json())
        seen.add((path, method, status, key if content else ""))
    assert seen == documented, {"documented, never seen": documented - seen, "seen, not documented": seen - documented}


def test_the_ui_is_at_the_root_and_the_readme_says_so(servers: tuple[Server, Server]) -> None:
    served, _ = servers
    page = httpx.get(served.url + "/", timeout=30)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    readme = (ROOT / "README.md").read_text()
    assert "/docs.json" in readme and "Swagger UI" in readme
