"""API keys on every door, through a real `bentoml serve`: curl, BentoML's sync and async clients (`token=`), the
OpenAI SDK (files and realtime), raw WebSockets with OpenAI's key subprotocol; wrong, missing, near-miss, empty
and query-string keys refused with 401 and nothing recognised; keys rotated by rewriting their file; CORS for
browsers of an allowed origin, 401s included; keys never in a log line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import speech
from tests.audio_files import encode
from tests.conftest import Exported
from tests.server import Server, serve_to_the_end

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")]

FILE_KEY = "key-one_2026"
HASHED_KEY = "second.key~with+marks"
ENV_KEY = "dev-key"
ALLOWED = "https://app.example"


@pytest.fixture(scope="module")
def keyed(tiny_bpe: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path, Path]]:
    work = tmp_path_factory.mktemp("keys")
    keys = work / "keys.txt"
    digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    keys.write_text(f"# the team's keys\n{FILE_KEY}\nsha256:{digest}  # the CI key, hashed\n", encoding="utf-8")
    (work / "speech.wav").write_bytes(encode(speech.hindi(speech.SENTENCES[5]), 16000))
    env = {
        "ASR_MODEL": tiny_bpe.tag,
        "ASR_DEVICE": "cpu",
        "ASR_API_KEYS_FILE": str(keys),
        "ASR_API_KEYS": ENV_KEY,
        "ASR_CORS_ORIGINS": ALLOWED,
    }
    with Server(env, work / "server.log") as server:
        yield server, work, keys


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def segments_run(server: Server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^asr_recognizer_segments_total\{[^}]*\} (\S+)", text, re.M))


def doors(server: Server, work: Path) -> dict[str, Any]:
    """Each door: a function that sends one request with the given headers (and query) and returns the response."""
    wav = (work / "speech.wav").read_bytes()
    url = server.url

    def post_file(path: str, field: str) -> Any:
        return lambda h, q="": httpx.post(url + path + q, files={field: ("a.wav", wav)}, headers=h, timeout=60)

    return {
        "/transcribe": post_file("/transcribe", "audio"),
        "/v1/audio/transcriptions": post_file("/v1/audio/transcriptions", "file"),
        "/v1/models": lambda h, q="": httpx.get(url + "/v1/models" + q, headers=h, timeout=10),
        "/v1/models/{id}": lambda h, q="": httpx.get(url + "/v1/models/x" + q, headers=h, timeout=10),
        "/status": lambda h, q="": httpx.post(url + "/status" + q, json={}, headers=h, timeout=10),
        "/schema.json": lambda h, q="": httpx.get(url + "/schema.json" + q, headers=h, timeout=10),
        "/docs.json": lambda h, q="": httpx.get(url + "/docs.json" + q, headers=h, timeout=10),
        "/infer_x (a BentoML route)": lambda h, q="": httpx.post(url + "/infer_x" + q, json={}, headers=h, timeout=10),
    }


BAD = {
    "no key": ({}, ""),
    "a wrong key": (auth("not-a-key"), ""),
    "one character off": (auth(FILE_KEY[:-1] + "7"), ""),
    "an empty bearer": ({"Authorization": "Bearer"}, ""),
    "another scheme": ({"Authorization": f"Basic {FILE_KEY}"}, ""),
    "the key in the query": ({}, f"?api_key={FILE_KEY}&key={FILE_KEY}"),
}


def test_every_door_refuses_a_bad_key_and_recognises_nothing(keyed: tuple[Server, Path, Path]) -> None:
    server, work, _ = keyed
    before = segments_run(server)
    failures_before = httpx.get(server.url + "/metrics", timeout=10).text.count("asr_auth_failures_total")
    matrix = {}
    for door, send in doors(server, work).items():
        for case, (headers, query) in BAD.items():
            r = send(headers, query)
            matrix[(door, case)] = r.status_code
            assert r.status_code == 401, (door, case, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer"), (door, case)
            body = r.json()
            if door.startswith("/v1/"):
                assert body["error"]["code"] == "invalid_api_key" and body["error"]["type"] == "invalid_request_error"
            else:
                assert body["error"] == "unauthorized" and body["message"]
    assert segments_run(server) == before  # nothing was recognised
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    failed = sum(float(v) for v in re.findall(r'^asr_auth_failures_total\{door="http"[^}]*\} (\S+)', metrics, re.M))
    assert failed >= len(matrix) and failures_before >= 0
    print(json.dumps({f"{d} / {c}": s for (d, c), s in matrix.items()}, indent=1))


def test_open_paths_need_no_key(keyed: tuple[Server, Path, Path]) -> None:
    server, _, _ = keyed
    for path in ("/livez", "/readyz", "/healthz", "/metrics", "/"):
        assert httpx.get(server.url + path, timeout=10).status_code == 200, path


@pytest.mark.parametrize("key", [FILE_KEY, HASHED_KEY, ENV_KEY])
def test_curl_with_each_kind_of_key(keyed: tuple[Server, Path, Path], key: str) -> None:
    server, work, _ = keyed
    before = segments_run(server)
    out = subprocess.run(
        ["curl", "-sf", "-H", f"Authorization: Bearer {key}", "-F", "audio=@speech.wav", server.url + "/transcribe"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout)["text"] and segments_run(server) > before


def test_bentoml_clients_with_a_token(keyed: tuple[Server, Path, Path]) -> None:
    import bentoml

    server, work, _ = keyed
    with bentoml.SyncHTTPClient(server.url, token=FILE_KEY, timeout=60) as client:
        by_sync = client.transcribe(audio=work / "speech.wav")["text"]

    async def by_async() -> str:
        async with bentoml.AsyncHTTPClient(server.url, token=HASHED_KEY, timeout=60) as client:
            return str((await client.transcribe(audio=work / "speech.wav", response_format="text")).strip())

    assert by_sync and by_sync.strip() == asyncio.run(by_async())
    # BentoML's clients read /schema.json first: without a key in force they cannot even start
    for token in ("not-a-key", None):
        with pytest.raises(bentoml.exceptions.BentoMLException, match="Failed to fetch schema"):
            bentoml.SyncHTTPClient(server.url, token=token, timeout=30)


def test_the_openai_sdk_with_its_api_key(keyed: tuple[Server, Path, Path]) -> None:
    import openai

    server, work, _ = keyed
    good = openai.OpenAI(base_url=server.url + "/v1", api_key=ENV_KEY)
    with open(work / "speech.wav", "rb") as audio:
        assert good.audio.transcriptions.create(model="", file=audio).text
    assert [m.id for m in good.models.list().data]
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught, open(work / "speech.wav", "rb") as audio:
        bad.audio.transcriptions.create(model="", file=audio)
    assert caught.value.code == "invalid_api_key"


def test_realtime_through_the_sdk_and_the_subprotocol(keyed: tuple[Server, Path, Path]) -> None:
    """The SDK's realtime client sends the key as Authorization; a browser sends it as the subprotocol
    `openai-insecure-api-key.<key>`, and the server accepts the other subprotocol it offered, never the key's.
    A wrong key gets HTTP 401 at the handshake."""
    import openai
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server, _, _ = keyed
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=FILE_KEY)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert next(iter(conn)).type == "session.created"
    ws_url = server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    offered = ["realtime", f"openai-insecure-api-key.{HASHED_KEY}"]
    with connect(ws_url, subprotocols=offered, open_timeout=10) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    refused = [
        {"subprotocols": ["realtime", "openai-insecure-api-key.wrong"]},
        {"additional_headers": {"Authorization": "Bearer wrong"}},
        {},
    ]
    for options in refused:
        with pytest.raises(InvalidStatus) as caught:
            connect(ws_url, open_timeout=10, **options).close()  # type: ignore[arg-type]
        assert caught.value.response.status_code == 401
        assert FILE_KEY.encode() not in caught.value.response.body and b"wrong" not in caught.value.response.body
    with pytest.raises(InvalidStatus):
        connect(ws_url + f"&api_key={FILE_KEY}", open_timeout=10).close()


def test_keys_rotate_without_a_restart(keyed: tuple[Server, Path, Path]) -> None:
    server, _, keys = keyed
    pid = server.proc.pid
    status = lambda key: httpx.post(server.url + "/status", json={}, headers=auth(key), timeout=10).status_code  # noqa: E731
    assert (status(FILE_KEY), status("rotated-key-3")) == (200, 401)
    saved = keys.read_text(encoding="utf-8")
    try:
        keys.write_text(saved.replace(FILE_KEY, "rotated-key-3"), encoding="utf-8")
        deadline = time.monotonic() + 5
        while status(FILE_KEY) != 401 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (status(FILE_KEY), status("rotated-key-3"), status(HASHED_KEY)) == (401, 200, 200)
        assert server.proc.pid == pid and server.proc.poll() is None
    finally:
        keys.write_text(saved, encoding="utf-8")
    deadline = time.monotonic() + 5
    while status(FILE_KEY) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)


def test_cors_for_an_allowed_origin_only(keyed: tuple[Server, Path, Path]) -> None:
    server, _, _ = keyed
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = httpx.options(server.url + "/transcribe", headers={"Origin": ALLOWED, **preflight}, timeout=10)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    other = httpx.options(
        server.url + "/transcribe", headers={"Origin": "https://evil.example", **preflight}, timeout=10
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    refused = httpx.post(server.url + "/status", json={}, headers={"Origin": ALLOWED}, timeout=10)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ALLOWED
    answered = httpx.post(server.url + "/status", json={}, headers={"Origin": ALLOWED, **auth(FILE_KEY)}, timeout=10)
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == ALLOWED
    foreign = httpx.post(server.url + "/status", json={}, headers={"Origin": "https://evil.example"}, timeout=10)
    assert foreign.status_code == 401 and "access-control-allow-origin" not in foreign.headers


def test_keys_are_never_written_and_requests_name_their_key_by_id(keyed: tuple[Server, Path, Path]) -> None:
    server, _, _ = keyed
    for key in (FILE_KEY, "not-a-key"):
        httpx.post(server.url + "/transcribe", files={"audio": ("a.wav", b"RIFF")}, headers=auth(key), timeout=30)
    status = httpx.post(server.url + "/status", json={}, headers=auth(FILE_KEY), timeout=10).text
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    logs = server.logs()
    for secret in (FILE_KEY, HASHED_KEY, ENV_KEY, "not-a-key"):
        assert secret not in logs and secret not in metrics and secret not in status
    short = hashlib.sha256(FILE_KEY.encode()).hexdigest()[:8]
    assert re.search(rf"POST /transcribe 415 unsupported_format .* key={short}\b", logs), logs[-2000:]
    assert f'key="{short}"' in metrics


def test_the_document_says_how_to_authenticate(keyed: tuple[Server, Path, Path]) -> None:
    server, _, _ = keyed
    doc = httpx.get(server.url + "/docs.json", headers=auth(FILE_KEY), timeout=10).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key of the service",
    }
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            if path in ("/readyz", "/livez", "/healthz", "/metrics"):
                assert "security" not in operation and "401" not in operation["responses"], path
            else:
                assert operation["security"] == [{"bearer": []}] and "401" in operation["responses"], path


def test_a_key_with_other_characters_stops_the_start(tiny_bpe: Exported, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("good-key\nbad key with spaces\n", encoding="utf-8")
    run = serve_to_the_end({"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "ASR_API_KEYS_FILE": str(keys)})
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode != 0 and len(errors) == 1 and "entry 2" in errors[0], run.stderr[-2000:]
    assert "bad key" not in run.stderr and "Traceback" not in run.stderr


def test_the_readme_keys_example(keyed: tuple[Server, Path, Path]) -> None:
    from tests.test_readme import example

    server, work, _ = keyed
    command = example("keys").replace("http://127.0.0.1:3000", server.url)
    env = {**os.environ, "ASR_KEY": FILE_KEY}
    out = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["text"]
    env["ASR_KEY"] = "not-a-key"
    out = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["error"] == "unauthorized"
