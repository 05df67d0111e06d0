"""Hostile and broken input through the running server: a 4xx JSON error each, never a 5xx, no worker death,
nothing left in the temporary directory. The fuzz runs FUZZ_EXAMPLES cases (200 in CI; the soak mode of
benchmarks/soak.py runs 1,000+)."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import speech
from tests.audio_files import ENCODINGS, encode, silent_flac
from tests.conftest import Exported
from tests.server import Server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")]
RATE = 16000
CLIENT_ERRORS = {400, 413, 415, 422}


def wav(rate: int, channels: int, payload: bytes, bits: int = 16, declared: int | None = None) -> bytes:
    block = channels * bits // 8
    size = len(payload) if declared is None else declared
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
    return b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", size) + payload


def bomb() -> bytes:
    """Two hours of FLAC silence: a few hundred KB that decode to 230 MB."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(RATE * 7200, np.int16), RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


DEEP = "[" * 500_000 + "]" * 500_000  # valid JSON, deeper than Python's parser goes


@pytest.fixture(scope="module")
def server(tiny_bpe: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server-tmp")  # the server's own TMPDIR, to check it is left empty
    # the defaults, but for a smaller upload limit (to test it cheaply)
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "ASR_MAX_UPLOAD_MB": "8", "TMPDIR": str(tmp)}
    with Server(env, tmp / "server.log") as s:
        s.tmp = tmp  # type: ignore[attr-defined]
        s.baseline = temp_listing(tmp)  # type: ignore[attr-defined]
        yield s


def temp_listing(tmp: Path) -> list[str]:
    """Everything in the server's temporary directory (files and folders, recursively)."""
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.name != "server.log")


def post(server: Server, data: bytes, name: str = "a.wav", ctype: str = "audio/wav") -> httpx.Response:
    return httpx.post(server.url + "/transcribe", files={"audio": (name, data, ctype)}, timeout=60)


def is_client_error(r: httpx.Response, status: int | None = None) -> None:
    assert r.status_code in ({status} if status else CLIENT_ERRORS), (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "message"}
    for leak in ("Traceback", "/tmp", "/home", ".py", "site-packages", "Error("):
        assert leak not in body["message"], body


def tone(seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 330 * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


HOSTILE = {
    "empty body": (b"", 400),
    "text": ("नमस्ते, यह ऑडियो नहीं है".encode(), 415),
    "random bytes": (np.random.default_rng(1).bytes(10_000), 415),
    "header only": (wav(RATE, 1, b""), 400),
    "truncated header": (wav(RATE, 1, b"\x00" * 100)[:30], 415),
    "zero frames (odd byte)": (wav(RATE, 1, b"\x01"), 400),
    "one sample": (encode(np.array([0.1], np.float32), RATE), 422),
    "rate 1 Hz": (wav(1, 1, b"\x00\x01" * 10), 400),
    "rate 10 MHz": (wav(10_000_000, 1, b"\x00\x01" * 1000), 400),
    "300 channels": (wav(RATE, 300, b"\x00" * 600 * 10), 400),
    "0 channels": (wav(RATE, 0, b"\x00" * 100), 415),
    "NaN samples": (
        encode(np.where(np.arange(RATE) == 9, np.nan, tone(1.0)).astype(np.float32), RATE, "WAV", "FLOAT"),
        400,
    ),
    "Inf samples": (
        encode(np.where(np.arange(RATE) == 9, np.inf, tone(1.0)).astype(np.float32), RATE, "WAV", "FLOAT"),
        400,
    ),
    "cut short (2,000 of 174,444 bytes)": (encode(tone(5.45), RATE)[:2000], 400),
    "over duration": (silent_flac(4096, 1, 3604.0), 413),  # an hour and 4 s (ASR_MAX_DURATION_S=3600)
    "decodes to 11 GB": (silent_flac(384_000, 2, 3600.0), 413),  # 5.7 MB; over ASR_MAX_DECODED_MB
}
CODES = {"over duration": "audio_too_long", "decodes to 11 GB": "audio_too_large"}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file(server: Server, case: str) -> None:
    data, status = HOSTILE[case]
    r = post(server, data)
    is_client_error(r, status)
    if case in CODES:
        assert r.json()["error"] == CODES[case]


def rss_mb(server: Server) -> float:
    total = 0.0
    for p in server.processes():
        try:
            total += p.memory_info().rss / 2**20
        except Exception:
            continue
    return total


def test_decoded_size_bombs_at_once(server: Server) -> None:
    """16 uploads at once of an hour at 384 kHz stereo (5.7 MB each, 11 GB of samples) are refused from the
    header; 16 of two minutes at 384 kHz stereo (368 MB of samples each, under ASR_MAX_DECODED_MB) are decoded
    block by block, down-mixed and resampled to 16 kHz (7.7 MB each). Every answer 200 or 413, the server stays
    up, and its resident memory stays within idle + 2 GB (decoding each upload whole would need ~6 GB)."""
    import threading

    hour, five = silent_flac(384_000, 2, 3600.0), silent_flac(384_000, 2, 120.0)
    idle = rss_mb(server)
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(server))
            time.sleep(0.1)

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=600) as client:
            jobs = [
                client.post(server.url + "/transcribe", files={"audio": ("a.flac", data, "audio/flac")})
                for data in [hour] * 16 + [five] * 16
            ]
            return list(await asyncio.gather(*jobs))

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        responses = asyncio.run(go())
    finally:
        done.set()
        watcher.join()
    statuses = [r.status_code for r in responses]
    print(f"bombs: statuses {sorted(set(statuses))}, idle {idle:.0f} MB, peak {peak[0]:.0f} MB")
    assert all(r.status_code == 413 and r.json()["error"] == "audio_too_large" for r in responses[:16])
    assert all(r.status_code == 200 and r.json()["duration_s"] == 120.0 for r in responses[16:]), statuses
    assert httpx.post(server.url + "/status", json={}, timeout=10).json()["ready"] is True
    assert peak[0] < idle + 2048


def test_compressed_bomb_is_refused_from_the_header(server: Server) -> None:
    data = bomb()
    assert len(data) < 2_000_000
    r = post(server, data, "a.flac", "audio/flac")
    is_client_error(r, 413)
    assert "7200" in r.json()["message"]


def test_header_that_claims_hours_but_holds_bytes(server: Server) -> None:
    """libsndfile clamps the declared size to the bytes present: what is there is transcribed, nothing more."""
    data = wav(RATE, 1, (np.arange(4000) % 200).astype(np.int16).tobytes(), declared=0x7FFFFFF0)
    r = post(server, data)
    assert r.status_code == 200 and r.json()["duration_s"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    "name",
    ["ब" * 300 + ".wav", "x" * 250 + ".wav", "a\x01b.wav", "../../etc/passwd", "../escape.wav", "con.wav", " .wav"],
)
def test_odd_file_names(server: Server, name: str) -> None:
    """Any file name is only a name: the upload is transcribed, and nothing is written outside the server's
    temporary directory (BentoML names its upload file after it: a path in the name must not escape)."""
    tmp: Path = server.tmp  # type: ignore[attr-defined]
    beside, passwd = sorted(p.name for p in tmp.parent.iterdir()), Path("/etc/passwd").read_bytes()
    r = post(server, encode(tone(0.5), RATE), name)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 5  # the upload's folder goes just after the response
    while temp_listing(tmp) != server.baseline and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    assert temp_listing(tmp) == server.baseline  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp.parent.iterdir()) == beside  # nothing appeared beside the temp dir
    assert Path("/etc/passwd").read_bytes() == passwd and not Path("/etc/passwd.wav").exists()


def test_declared_content_type_is_not_trusted(server: Server) -> None:
    assert post(server, encode(tone(0.5), RATE), "a.txt", "text/html").status_code == 200
    is_client_error(post(server, b"<html></html>", "a.wav", "audio/wav"), 415)


FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
SEEDS = [encode(tone(0.6), RATE, c, s) for _, c, s in ENCODINGS if s not in ("OPUS", "VORBIS")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 2000))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


def test_fuzz_mutated_files(server: Server) -> None:
    statuses: dict[int, int] = {}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mutated())
    def one(data: bytes) -> None:
        r = post(server, data)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code == 200 or r.status_code in CLIENT_ERRORS, (r.status_code, r.text)
        if r.status_code != 200:
            is_client_error(r)

    one()
    print(f"fuzz: {sum(statuses.values())} cases, statuses {dict(sorted(statuses.items()))}")
    assert httpx.post(server.url + "/status", timeout=10).json()["ready"] is True  # no worker died


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("post", "/transcribe", {"files": {"audio": ("a.wav", b"RIFF")}, "data": {"timestamps": "[" * 500_000}}),
        ("post", "/transcribe", {"files": {"audio": ("a.wav", b"RIFF")}, "data": {"hotwords": DEEP}}),
        ("post", "/v1/audio/transcriptions", {"files": {"file": ("a.wav", b"RIFF")}, "data": {"prompt": DEEP}}),
        ("post", "/status", {"content": DEEP, "headers": {"content-type": "application/json"}}),
        ("post", "/transcribe", {"content": DEEP, "headers": {"content-type": "application/json"}}),
    ],
)
def test_json_nested_deeper_than_the_parser_goes(server: Server, method: str, path: str, kwargs: Any) -> None:
    """Client JSON (form fields are JSON-decoded, bodies parsed) nested 500,000 deep: a clear 4xx or an answer
    that ignores it, never a 500 or a dropped connection; the server answers the next request."""
    r = httpx.request(method, server.url + path, timeout=60, **kwargs)
    assert r.status_code < 500, (path, r.status_code, r.text[:300])
    body = r.json()
    assert isinstance(body, dict)
    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200
    assert "RecursionError" not in server.logs()


def test_zz_temporary_directory_back_to_its_baseline(server: Server) -> None:
    """Runs after every other test of this module (hostile files, bombs, fuzz, odd names): once the last answer
    is out, the server's temporary directory holds exactly what it held before the first request. (BentoML
    keeps a pooled bentoml-request-* folder per request ever in flight at once; service.patches removes it.)"""
    tmp: Path = server.tmp  # type: ignore[attr-defined]
    post(server, encode(tone(0.5), RATE))
    post(server, b"junk")
    deadline = time.monotonic() + 5  # a request's folder is removed just after its response is sent
    while temp_listing(tmp) != server.baseline and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.1)
    assert temp_listing(tmp) == server.baseline  # type: ignore[attr-defined]
