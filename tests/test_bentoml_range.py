"""The service on whichever BentoML 1.4 release is installed: a real `bentoml serve` answered through curl, BentoML's
client and the OpenAI SDK, every patch applied; and on a BentoML whose code one patch relies on has changed, the
service starts, says once what it lost, reports the patch skipped in /status and answers the same.

CI runs this module twice: with the suite, on the newest 1.4 release, and in a runtime-only virtualenv (no torch,
no NeMo) on the oldest supported one, 1.4.39, with a model the first run exported (ASR_TEST_MODEL and
ASR_TEST_BENTOML_HOME name it there)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import speech
from tests.audio_files import encode
from tests.server import Server
from tests.test_patches import CHANGED_BENTOML

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")]


@pytest.fixture(scope="module")
def model(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(store tag, BENTOML_HOME holding it): the one ASR_TEST_MODEL names, else the generated tiny model."""
    if os.environ.get("ASR_TEST_MODEL"):
        return os.environ["ASR_TEST_MODEL"], os.environ["ASR_TEST_BENTOML_HOME"]
    tiny = request.getfixturevalue("tiny_bpe")
    return tiny.tag, os.environ["BENTOML_HOME"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("range")
    (folder / "speech.wav").write_bytes(encode(speech.hindi(speech.SENTENCES[4]), 16000))
    return folder


@pytest.fixture(scope="module")
def server(model: tuple[str, str], work: Path) -> Iterator[Server]:
    tag, home = model
    with Server({"ASR_MODEL": tag, "ASR_DEVICE": "cpu", "BENTOML_HOME": home}, work / "server.log") as s:
        yield s


def answers(url: str, work: Path) -> tuple[str, str, str]:
    """The transcript of speech.wav through curl, BentoML's SyncHTTPClient and the OpenAI SDK."""
    import bentoml
    from openai import OpenAI

    wav = work / "speech.wav"
    curl = subprocess.run(
        ["curl", "-sf", "-X", "POST", url + "/transcribe", "-F", f"audio=@{wav}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    with bentoml.SyncHTTPClient(url, timeout=120) as client:
        by_client = client.transcribe(audio=wav)["text"]
    with open(wav, "rb") as audio:
        by_sdk = OpenAI(base_url=url + "/v1", api_key="unused").audio.transcriptions.create(model="", file=audio).text
    return json.loads(curl.stdout)["text"], by_client, by_sdk


def test_serves_through_curl_the_bentoml_client_and_the_openai_sdk(server: Server, work: Path) -> None:
    import bentoml

    by_curl, by_client, by_sdk = answers(server.url, work)
    assert by_curl and by_curl == by_client == by_sdk
    status = httpx.post(server.url + "/status", json={}, timeout=10).json()
    assert status["ready"] is True and {p["status"] for p in status["patches"]} == {"applied"}
    assert "warning: BentoML patch" not in server.logs()
    print(f"BentoML {bentoml.__version__}: {len(status['patches'])} patches applied")


def test_a_changed_bentoml_is_served_without_the_patch_it_breaks(
    model: tuple[str, str], work: Path, server: Server, tmp_path: Path
) -> None:
    """A BentoML whose CorkDispatcher.inbound_call is other code (sitecustomize, in every process of the
    server): it starts, says once which patch it skipped and what is lost, /status lists it as skipped, the
    other patches apply, and the answers equal the unchanged server's."""
    (tmp_path / "sitecustomize.py").write_text(CHANGED_BENTOML, encoding="utf-8")
    root = str(Path(__file__).resolve().parents[1])
    tag, home = model
    env = {"ASR_MODEL": tag, "ASR_DEVICE": "cpu", "BENTOML_HOME": home, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"}
    with Server(env, tmp_path / "changed.log") as changed:
        got = answers(changed.url, work)
        status = httpx.post(changed.url + "/status", json={}, timeout=10).json()
        warnings = [line for line in changed.logs().splitlines() if "warning: BentoML patch" in line]
    assert got == answers(server.url, work)
    skipped = {p["name"]: p for p in status["patches"] if p["status"] != "applied"}
    assert list(skipped) == ["drop_abandoned_jobs"] and "segments will run" in skipped["drop_abandoned_jobs"]["lost"]
    assert "CorkDispatcher.inbound_call" in skipped["drop_abandoned_jobs"]["reason"]
    assert len(warnings) == 1 and "'drop_abandoned_jobs' skipped" in warnings[0]
