"""The BentoML Python clients, as users call them, through a real `bentoml serve`: every option set x the sync
and async client x model selection; errors as exceptions carrying the status and our error body; 32
concurrent async calls; and another BentoML service depending on this one by URL and by import."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest

from demo.speech import speak
from demo.text import read_heldout
from tests import speech
from tests.audio_files import encode
from tests.conftest import NO_GPU, Exported
from tests.server import ROOT, Server
from tests.test_service_e2e import nemo_texts

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng")]
RATE = 16000
OPTION_SETS: list[dict[str, Any]] = [
    {},
    {"timestamps": True},
    {"timestamps": False},
    {"response_format": "json"},
    {"response_format": "json", "timestamps": True},
    {"response_format": "text"},
    {"response_format": "srt"},
    {"response_format": "vtt"},
]


@pytest.fixture(scope="module")
def served(
    demo: Exported, tiny_char: Exported, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    """The demo model (hi, the default) and the tiny character model (mr): selection by name and language."""
    work = tmp_path_factory.mktemp("clients")
    sentences = read_heldout()[100:103]  # past the demo model's dev set (heldout[:48])
    for i, sentence in enumerate(sentences):
        (work / f"speech{i}.wav").write_bytes(encode(speak(sentence), RATE))
    env = {
        "ASR_MODELS": f"{demo.tag},{tiny_char.tag}",
        "ASR_DEVICE": "cpu",
        "ASR_MAX_UPLOAD_MB": "2",
    }
    with Server(env, work / "server.log") as server:
        yield server, work


@pytest.fixture(scope="module")
def references(served: tuple[Server, Path], demo: Exported, tiny_char: Exported) -> dict[str, list[str]]:
    """NeMo transcribe()'s text of each clip, per model."""
    import soundfile as sf

    _, work = served
    clips = [sf.read(work / f"speech{i}.wav", dtype="float32")[0] for i in range(3)]
    return {
        "demo": nemo_texts(demo.model, clips, work),
        "char": nemo_texts(tiny_char.model, clips, work),
    }


def curl_like(url: str, wav: Path, options: dict[str, Any]) -> httpx.Response:
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()}
    return httpx.post(url + "/transcribe", files={"audio": (wav.name, wav.read_bytes())}, data=data, timeout=120)


def check(result: Any, options: dict[str, Any], expected_text: str, plain: httpx.Response) -> None:
    """What a client call returns: a dict for json (words only when asked for), a str for text/srt/vtt, each
    equal to what plain HTTP answers."""
    fmt = options.get("response_format", "json")
    if fmt == "json":
        assert isinstance(result, dict), type(result)
        assert result["text"] == expected_text
        assert ("words" in result) == bool(options.get("timestamps"))
        # the VAD's figures (ASR_SEGMENTER=vad, the default) reach the clients too
        assert 0 < result["speech_s"] <= result["duration_s"]
        assert all(0 <= s["no_speech_prob"] <= 1 for s in result["segments"])
        assert result == plain.json()
    else:
        assert isinstance(result, str), type(result)
        assert result == plain.text
        if fmt == "text":
            assert result == expected_text


@pytest.mark.parametrize("selection", ["default", "model", "language"])
@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "none")
def test_sync_and_async_clients(
    served: tuple[Server, Path],
    references: dict[str, list[str]],
    tiny_char: Exported,
    options: dict[str, Any],
    selection: str,
) -> None:
    server, work = served
    choose = {"default": {}, "model": {"model": tiny_char.tag.split(":")[0]}, "language": {"language": "mr"}}[selection]
    expected = references["demo" if selection == "default" else "char"][0]
    wav = work / "speech0.wav"
    call = {**options, **choose}
    plain = curl_like(server.url, wav, call)
    assert plain.status_code == 200, plain.text
    with bentoml.SyncHTTPClient(server.url, timeout=120) as client:
        check(client.transcribe(audio=wav, **call), options, expected, plain)

    async def go() -> Any:
        async with bentoml.AsyncHTTPClient(server.url, timeout=120) as client:
            return await client.transcribe(audio=wav, **call)

    check(asyncio.run(go()), options, expected, plain)


def test_32_concurrent_async_calls_equal_nemo(served: tuple[Server, Path], references: dict[str, list[str]]) -> None:
    """32 calls in flight at once, each on its own AsyncHTTPClient (BentoML 1.4.39's client closes the files of
    all its calls when one ends: see the README); then calls one after another on one shared client."""
    server, work = served
    wavs = [work / f"speech{i % 3}.wav" for i in range(32)]

    async def one(wav: Path) -> Any:
        async with bentoml.AsyncHTTPClient(server.url, timeout=300) as client:
            return await client.transcribe(audio=wav)

    async def go() -> list[Any]:
        return list(await asyncio.gather(*[one(w) for w in wavs]))

    results = asyncio.run(go())
    assert [r["text"] for r in results] == [references["demo"][i % 3] for i in range(32)]

    async def shared() -> list[Any]:
        async with bentoml.AsyncHTTPClient(server.url, timeout=300) as client:
            return [await client.transcribe(audio=w) for w in wavs[:6]]

    assert [r["text"] for r in asyncio.run(shared())] == [references["demo"][i % 3] for i in range(6)]


def caught(call: Any) -> bentoml.exceptions.BentoMLException:
    with pytest.raises(bentoml.exceptions.BentoMLException) as info:
        call()
    return info.value


def body(exc: bentoml.exceptions.BentoMLException) -> dict[str, str]:
    """Our error body, as the client's exception carries it (its message is the response's text)."""
    return dict(json.loads(exc.message))


def test_errors_reach_the_client_with_status_and_code(served: tuple[Server, Path], tmp_path: Path) -> None:
    server, work = served
    (tmp_path / "big.wav").write_bytes(encode(np.zeros(RATE * 80, np.float32), RATE))  # 2.6 MB > 2 MB
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "short.wav").write_bytes(encode(np.zeros(100, np.float32), RATE))
    cases = [
        (400, "unknown_model", {"audio": work / "speech0.wav", "model": "whisper-1"}),
        (413, "upload_too_large", {"audio": tmp_path / "big.wav"}),
        (415, "unsupported_format", {"audio": tmp_path / "notes.txt"}),
        (422, "audio_too_short", {"audio": tmp_path / "short.wav"}),
    ]
    with bentoml.SyncHTTPClient(server.url, timeout=120) as client:
        for status, code, kwargs in cases:
            exc = caught(lambda kwargs=kwargs: client.transcribe(**kwargs))
            assert int(exc.error_code) == status and body(exc)["error"] == code and body(exc)["message"]


def test_429_and_503_reach_the_client(tiny_bpe: Exported, tmp_path: Path) -> None:
    """429: four calls at once (clients made beforehand) on a service that admits one; 503: a service that
    cannot turn ready (the GPU it was told to demand is not there) answers `not_ready`."""
    wav = tmp_path / "ten-minutes.wav"
    wav.write_bytes(encode(speech.noise(600.0, 3, 0.05), RATE))
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "ASR_MAX_CONCURRENCY": "1"}
    with Server(env, tmp_path / "one.log") as server:

        async def go() -> list[Any]:
            clients = [bentoml.AsyncHTTPClient(server.url, timeout=300) for _ in range(4)]
            for client in clients:
                await client.__aenter__()
            try:
                calls = [c.transcribe(audio=wav) for c in clients]
                return list(await asyncio.gather(*calls, return_exceptions=True))
            finally:
                for client in clients:
                    await client.__aexit__(None, None, None)

        outcomes = asyncio.run(go())
    refused = [o for o in outcomes if isinstance(o, bentoml.exceptions.BentoMLException)]
    assert len(refused) == 3 and sum(isinstance(o, dict) for o in outcomes) == 1, outcomes
    assert all(int(e.error_code) == 429 and body(e)["error"] == "too_many_requests" for e in refused)

    wav = tmp_path / "a.wav"
    wav.write_bytes(encode(speech.hindi(speech.SENTENCES[0]), RATE))
    env = {"ASR_MODEL": tiny_bpe.tag, **NO_GPU}
    with (
        Server(env, tmp_path / "s.log", wait_ready=False) as server,
        bentoml.SyncHTTPClient(server.url, timeout=60, server_ready_timeout=0) as client,
    ):
        exc = caught(lambda: client.transcribe(audio=wav))
    assert int(exc.error_code) == 503 and body(exc)["error"] == "not_ready"


@pytest.mark.parametrize("how", ["url", "import"])
def test_another_bentoml_service_depends_on_this_one(
    served: tuple[Server, Path], references: dict[str, list[str]], demo: Exported, how: str, tmp_path: Path
) -> None:
    """`bentoml.depends(url=...)` on a running service, and `bentoml.depends(Transcriber)` (by import: the
    parent runs this service inside it): every response format comes back as a Python value."""
    server, work = served
    env = {"ASR_URL": server.url, "ASR_MODEL": demo.tag, "ASR_DEVICE": "cpu"}
    target = "tests.relay_url:RelayByUrl" if how == "url" else "tests.relay_import:RelayByImport"
    with Server(env, tmp_path / "relay.log", target=target) as relay:
        for options in ({}, {"timestamps": True}, {"response_format": "text"}, {"response_format": "srt"}):
            data = {k: str(v).lower() if isinstance(v, bool) else v for k, v in options.items()}
            r = httpx.post(
                relay.url + "/relay",
                files={"audio": ("a.wav", (work / "speech1.wav").read_bytes())},
                data=data,
                timeout=120,
            )
            assert r.status_code == 200, r.text
            answer = r.json()
            plain = curl_like(server.url, work / "speech1.wav", options)
            if options.get("response_format") in ("text", "srt"):
                assert answer == {"type": "str", "value": plain.text}
            else:
                assert answer["value"]["text"] == references["demo"][1]
                assert ("words" in answer["value"]) == bool(options.get("timestamps"))


def test_readme_async_client_example_runs(served: tuple[Server, Path]) -> None:
    import re

    server, work = served
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- example: async client -->\n```python\n(.*?)```", readme, re.S)
    assert match, "README has the async client example"
    (work / "speech.wav").write_bytes((work / "speech2.wav").read_bytes())
    code = match.group(1).replace("http://127.0.0.1:3000", server.url)
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() and "WEBVTT" in out.stdout
