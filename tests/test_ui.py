"""The page at /ui in a real browser (Debian's Chromium, driven by Playwright) against a real `bentoml serve` of
the demo model: uploads read along with their audio and download what the API gives; the microphone (Chromium's
fake capture device, fed a WAV of three sentences) streams through the realtime socket into live text and
finished lines; errors are said in words; with API keys the page asks for one and sends it.

Without Chromium (scripts/setup.sh installs it as root) the run stops at once (tests/conftest.py), unless
ASR_ALLOW_MISSING_TOOLS=1 says to skip these."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf

from demo.metrics import cer
from demo.speech import speak
from demo.text import read_heldout
from tests import speech
from tests.audio_files import encode
from tests.conftest import Exported
from tests.server import ROOT, Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("ASR_UI_SCREENSHOTS", "")  # a folder to keep the views in (docs/ for the README's)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no Chromium (ASR_ALLOW_MISSING_TOOLS=1)"),
    pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox"),
]
FLAGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no connections out of this machine
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
# sentences the demo model never saw in training or tuning (its dev set is heldout[:48])
SENTENCES = read_heldout()[60:63]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def launch(playwright: Any, microphone: Path | None = None) -> Any:
    flags = list(FLAGS)
    if microphone is not None:  # a fake microphone playing this file once (%noloop), granted without a prompt
        flags += [
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}%noloop",
        ]
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui")
    audio = speak(SENTENCES[0])
    (folder / "sentence.wav").write_bytes(encode(audio, 16000))
    (folder / "sentence.m4a").write_bytes(encode(audio, 16000, "MP4"))
    joined = [speak(s) for s in SENTENCES]
    silence = [0.0] * 16000  # a second between sentences: each its own turn
    import numpy as np

    three = np.concatenate([np.concatenate([a, np.asarray(silence, np.float32)]) for a in joined])
    sf.write(folder / "three.wav", np.concatenate([np.zeros(8000, np.float32), three]), 16000, subtype="PCM_16")
    return folder


@pytest.fixture(scope="module")
def server(demo: Exported, work: Path) -> Iterator[Server]:
    with Server({"ASR_MODEL": demo.tag, "ASR_DEVICE": "cpu"}, work / "server.log") as s:
        yield s


def api(server: Server, path: Path, fmt: str = "json", headers: dict[str, str] | None = None) -> Any:
    data = {"timestamps": "true", "response_format": fmt, "decoding": "default"}
    with open(path, "rb") as f:
        r = httpx.post(
            server.url + "/transcribe", files={"audio": (path.name, f)}, data=data, headers=headers, timeout=120
        )
    assert r.status_code == 200, r.text
    return r.json() if fmt == "json" else r.text


def keep(page: Any, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"ui-{name}.png"), full_page=True)


@pytest.mark.parametrize("name", ["sentence.wav", "sentence.m4a"])
def test_an_upload_reads_along_with_its_audio(browser: Any, server: Server, work: Path, name: str) -> None:
    want = api(server, work / name)
    chromium = launch(browser)
    try:
        page = chromium.new_page(viewport={"width": 1000, "height": 900})
        page.goto(server.url + "/ui")
        page.wait_for_selector("[data-testid=model] option", state="attached")
        assert "demo model" in page.inner_text("[data-testid=model]")
        page.set_input_files("[data-testid=file]", str(work / name))
        page.wait_for_selector("[data-testid=word]")
        words = page.query_selector_all("[data-testid=word]")
        assert " ".join(w.inner_text() for w in words) == " ".join(want["text"].split())
        spans = [(float(w.get_attribute("data-start")), float(w.get_attribute("data-end"))) for w in words]
        assert spans == [(w["start"], w["end"]) for w in want["words"]]
        page.wait_for_function("document.getElementById('player').readyState >= 1")
        words[2].click()
        position = page.evaluate("document.getElementById('player').currentTime")
        assert abs(position - spans[2][0]) <= 0.05
        with page.expect_download() as download:
            page.click("[data-testid=download-srt]")
        assert Path(download.value.path()).read_text(encoding="utf-8") == api(server, work / name, "srt")
        low = [w["word"] for w in want["words"] if w["confidence"] < 0.5]
        assert len(page.query_selector_all("[data-testid=transcript] .word.low")) == len(low)
        if name.endswith(".wav"):
            page.evaluate("document.getElementById('player').currentTime = " + str(spans[1][0] + 0.01))
            page.wait_for_selector("[data-testid=word].now")
            keep(page, "upload")
            page.set_viewport_size({"width": 390, "height": 844})  # a phone's width
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            keep(page, "phone")
    finally:
        chromium.close()


def test_speaking_gives_live_text_then_a_line_per_sentence(browser: Any, server: Server, work: Path) -> None:
    """The fake microphone plays three sentences with pauses: partial text shows while a sentence is spoken
    (before its line completes), and the page ends with three lines whose text is within CER 0.10 of what
    /transcribe hears in the same audio."""
    chromium = launch(browser, microphone=work / "three.wav")
    try:
        page = chromium.new_page()
        page.goto(server.url + "/ui")
        page.wait_for_selector("[data-testid=model] option", state="attached")
        page.click("[data-testid=record]")
        page.wait_for_function("document.querySelector('[data-testid=live]').textContent.length > 0", timeout=30000)
        assert page.eval_on_selector_all("[data-testid=turns] li", "items => items.length") == 0
        page.wait_for_function("document.querySelectorAll('[data-testid=turns] li').length >= 3", timeout=60000)
        keep(page, "speak")
        page.click("[data-testid=stop]")
        page.wait_for_function("document.querySelector('[data-testid=stop]').disabled", timeout=10000)
        lines = page.eval_on_selector_all("[data-testid=turns] li", "items => items.map(i => i.textContent)")
        assert page.inner_text("[data-testid=error]") == ""
    finally:
        chromium.close()
    heard = api(server, work / "three.wav")["text"]
    print(f"speak: {len(lines)} lines, CER {cer([heard], [' '.join(lines)]):.3f} against /transcribe of the same audio")
    assert len(lines) == 3 and cer([heard], [" ".join(lines)]) <= 0.10, (lines, heard)


def test_a_refused_microphone_is_said_in_words(browser: Any, server: Server) -> None:
    chromium = launch(browser)  # no fake device, no automatic grant: the browser refuses
    try:
        context = chromium.new_context(permissions=[])
        page = context.new_page()
        page.goto(server.url + "/ui")
        page.click("[data-testid=record]")
        page.wait_for_function("document.querySelector('[data-testid=error]').textContent.length > 0")
        message = page.inner_text("[data-testid=error]")
        assert "microphone" in message.lower() and ("refused" in message or "found" in message)
    finally:
        chromium.close()


def test_a_service_that_stops_mid_session_is_said_in_words(browser: Any, tiny_bpe: Exported, work: Path) -> None:
    chromium = launch(browser, microphone=work / "three.wav")
    try:
        with Server({"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu"}, work / "stopping.log") as doomed:
            page = chromium.new_page()
            page.goto(doomed.url + "/ui")
            page.wait_for_selector("[data-testid=model] option", state="attached")
            page.click("[data-testid=record]")
            page.wait_for_function("document.getElementById('speak-status').textContent === 'listening…'")
            page.wait_for_timeout(1500)  # streaming
        page.wait_for_function("document.querySelector('[data-testid=error]').textContent.length > 0", timeout=30000)
        message = page.inner_text("[data-testid=error]")
        assert "closed" in message or "failed" in message, message
        assert page.is_enabled("[data-testid=record]")
    finally:
        chromium.close()


def test_with_api_keys_the_page_asks_for_one_and_sends_it(browser: Any, tiny_bpe: Exported, work: Path) -> None:
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "ASR_API_KEYS": "page-key-1"}
    chromium = launch(browser)
    try:
        with Server(env, work / "keyed.log") as keyed:
            page = chromium.new_page()
            assert page.goto(keyed.url + "/ui").status == 200  # the page itself is open
            page.wait_for_function("document.querySelector('[data-testid=error]').textContent.includes('API key')")
            page.fill("#key", "page-key-1")
            page.dispatch_event("#key", "change")
            page.wait_for_selector("[data-testid=model] option", state="attached")
            assert page.evaluate("sessionStorage.getItem('asr-key')") == "page-key-1"
            page.set_input_files("[data-testid=file]", str(work / "sentence.wav"))
            page.wait_for_selector("[data-testid=word]")
            want = api(keyed, work / "sentence.wav", headers={"Authorization": "Bearer page-key-1"})["text"]
            assert " ".join(page.inner_text("[data-testid=transcript]").split()) == " ".join(want.split())
    finally:
        chromium.close()


def test_the_page_is_one_file_that_fetches_nothing_from_elsewhere() -> None:
    page = (ROOT / "service" / "api" / "ui.html").read_text(encoding="utf-8")
    assert not [u for u in __import__("re").findall(r"""(?:src|href)=["']([^"']+)""", page) if "//" in u]
    assert "http://" not in page and "https://" not in page
    for testid in ("record", "stop", "live", "turns", "file", "transcript", "model", "download-srt", "error"):
        assert f'data-testid="{testid}"' in page, testid
    assert json.dumps("word") in page or "'word'" in page or '"word"' in page
