"""Long audio through the server: cut in pauses, batched, stitched; timestamps; memory; subtitles; OpenAI SDK."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf
import srt as srt_lib
import webvtt

from tests import speech
from tests.audio_files import encode
from tests.conftest import Exported
from tests.server import Server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")]
RATE = 16000
PAUSE_S = 0.8


@pytest.fixture(scope="module")
def server(tiny_char: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Cutting by energy: every pause cuts, all audio is sent (the VAD's server is below)."""
    env = {"ASR_MODEL": tiny_char.tag, "ASR_DEVICE": "cpu", "ASR_TIMEOUT_S": "600", "ASR_SEGMENTER": "energy"}
    with Server(env, tmp_path_factory.mktemp("long") / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def vad_server(tiny_char: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"ASR_MODEL": tiny_char.tag, "ASR_DEVICE": "cpu", "ASR_SEGMENT_S": "10"}  # the VAD by default
    with Server(env, tmp_path_factory.mktemp("vad") / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def long_file() -> tuple[bytes, list[tuple[float, float]]]:
    """About 3 minutes: the test sentences ten times over, 0.8 s of silence between them."""
    texts = speech.SENTENCES * 10
    audio, starts = speech.joined(texts, pause_s=PAUSE_S)
    spans = [(s, s + speech.hindi(t).shape[0] / RATE) for s, t in zip(starts, texts, strict=True)]
    return encode(audio, RATE), spans


def recognizer_rss(server: Server) -> psutil.Process:
    workers = [p for p in server.processes() if "asr_recognizer" in " ".join(p.cmdline())]
    assert len(workers) == 1, [p.cmdline() for p in server.processes()]
    return workers[0]


def peak_rss_during(server: Server, wav: bytes) -> tuple[dict[str, object], int]:
    proc, peak, done = recognizer_rss(server), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.02)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        r = httpx.post(
            server.url + "/transcribe",
            files={"audio": ("a.wav", wav, "audio/wav")},
            data={"timestamps": "true"},
            timeout=600,
        )
    finally:
        done.set()
        watcher.join()
    assert r.status_code == 200, r.text
    return dict(r.json()), peak[0]


@pytest.mark.parametrize("times", [1, 4])
def test_long_file_is_cut_in_pauses_and_equals_nemo_per_segment(
    server: Server, tiny_char: Exported, long_file: tuple[bytes, list[tuple[float, float]]], tmp_path: Path, times: int
) -> None:
    """Three minutes, and twelve: an upload of 23 MB waits in a temporary file (over forms.SPOOL_BYTES) and its
    46 MB of decoded audio on disk (over spill.SPILL_BYTES); every segment is still exactly NeMo's."""
    wav, spans = long_file
    if times > 1:
        audio, _ = sf.read(io.BytesIO(wav), dtype="float32")
        total = audio.shape[0] / RATE
        spans = [(s + k * total, e + k * total) for k in range(times) for s, e in spans]
        wav = encode(np.tile(audio, times), RATE)
        from service.api.forms import SPOOL_BYTES
        from service.audio.spill import SPILL_BYTES

        assert len(wav) > SPOOL_BYTES and total * times * RATE * 4 > SPILL_BYTES
    body, _ = peak_rss_during(server, wav)
    segments = body["segments"]
    assert isinstance(segments, list) and len(segments) == len(spans)  # one utterance per segment
    audio, _ = sf.read(io.BytesIO(wav), dtype="float32")
    # every cut lies in a pause: strictly between the end of one sentence and the start of the next (where the
    # file is repeated, the pause at each joint is the file's end and start: twice as long)
    pauses = [PAUSE_S] if times == 1 else [PAUSE_S, 2 * PAUSE_S]
    for seg in segments[1:]:
        before = [e for s, e in spans if e <= seg["start"]]
        after = [s for s, e in spans if s >= seg["start"]]
        assert before and after and any(after[0] - before[-1] == pytest.approx(p, abs=0.01) for p in pauses)
    # the text is the concatenation of NeMo's transcript of each segment's own audio
    paths = []
    for i, seg in enumerate(segments):
        lo, hi = round(seg["start"] * RATE), round(seg["end"] * RATE)
        path = tmp_path / f"seg{i}.wav"
        sf.write(path, audio[lo:hi], RATE, subtype="FLOAT")
        paths.append(str(path))
    hyps = tiny_char.model.transcribe(paths, batch_size=8, return_hypotheses=True, verbose=False)
    assert [s["text"] for s in segments] == [h.text for h in hyps]
    assert body["text"] == " ".join(h.text.strip() for h in hyps if h.text.strip())
    if times > 1:  # a large upload the way users send it: curl's form, BentoML's clients, the OpenAI SDK
        files = {"file": ("a.wav", wav, "audio/wav")}
        r = httpx.post(server.url + "/v1/audio/transcriptions", files=files, data={"model": tiny_char.tag}, timeout=600)
        assert r.status_code == 200 and r.json()["text"] == body["text"]
        import asyncio

        import bentoml
        from openai import OpenAI

        path = tmp_path / "long.wav"
        path.write_bytes(wav)
        with bentoml.SyncHTTPClient(server.url, timeout=600) as client:
            assert client.transcribe(audio=path)["text"] == body["text"]

        async def go() -> Any:
            async with bentoml.AsyncHTTPClient(server.url, timeout=600) as client:
                return await client.transcribe(audio=path)

        assert asyncio.run(go())["text"] == body["text"]
        sdk = OpenAI(base_url=server.url + "/v1", api_key="not-needed", timeout=600)
        with path.open("rb") as f:
            assert sdk.audio.transcriptions.create(model=tiny_char.tag, file=f).text == body["text"]


def test_word_times_match_the_sentences(server: Server, long_file: tuple[bytes, list[tuple[float, float]]]) -> None:
    """Random weights put words anywhere inside their utterance, so the stated tolerance is the silence around
    it: every word lies between the end of the previous sentence and the start of the next one (one pause,
    0.8 s, on each side of its own sentence), and times are monotonic within the audio. (With a trained model,
    tests/test_demo_model.py holds a long file's word times to 0.12 s.)"""
    wav, spans = long_file
    body, _ = peak_rss_during(server, wav)
    words = body["words"]
    assert isinstance(words, list) and words
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(0 <= w["start"] <= w["end"] <= body["duration_s"] for w in words)
    ends = [0.0] + [e for _, e in spans]
    begins = [s for s, _ in spans] + [float(body["duration_s"])]  # type: ignore[arg-type]
    widened = [(ends[i] - 0.01, begins[i + 1] + 0.01) for i in range(len(spans))]
    for w in words:
        assert any(lo <= w["start"] and w["end"] <= hi for lo, hi in widened), w


def test_memory_does_not_grow_with_the_square(
    server: Server, long_file: tuple[bytes, list[tuple[float, float]]]
) -> None:
    thirty = encode(speech.joined(speech.SENTENCES * 2, pause_s=0.5)[0][: 30 * RATE], RATE)
    _, peak_short = peak_rss_during(server, thirty)
    wav, _ = long_file
    _, peak_long = peak_rss_during(server, wav)
    ten_minutes = encode(np.tile(sf.read(io.BytesIO(wav), dtype="float32")[0], 4)[: 600 * RATE], RATE)
    started = time.monotonic()
    body, peak_ten = peak_rss_during(server, ten_minutes)
    print(f"10-minute file: {time.monotonic() - started:.1f} s wall, {len(body['segments'])} segments")  # type: ignore[arg-type]
    assert body["duration_s"] == pytest.approx(600, abs=0.01)
    mb = 1024 * 1024
    print(
        f"recognizer peak RSS: 30 s {peak_short / mb:.0f} MB, 3 min {peak_long / mb:.0f} MB, "
        f"10 min {peak_ten / mb:.0f} MB"
    )
    # Flat: 20x the audio of the 30-s file in the same memory. The recognizer holds at most 4 segments of a
    # request at once, so its peak does not depend on the file's length; holding the file's audio alone
    # would add 38 MB (600 s as float32), a square law in one 600-s segment gigabytes. The bound is half the
    # audio's size: 19 MB above the 30-s file's peak (measured here: +5 MB).
    bound = peak_short + 600 * RATE * 4 / 2
    assert peak_ten < bound and peak_long < bound


def test_vad_sends_speech_only_with_absolute_times(vad_server: Server, tiny_char: Exported, tmp_path: Path) -> None:
    """Sentences, 15 s of music-like tones (no speech), more sentences: the segments hold the sentences only,
    their times are where their audio is in the file (NeMo on each segment's own stretch of the file says
    exactly its text), and the answers carry speech_s and per-segment no_speech_prob."""
    from demo import augment as aug

    first, _ = speech.joined(speech.SENTENCES[:4], pause_s=0.6)
    second, _ = speech.joined(speech.SENTENCES[2:], pause_s=0.6)
    music = (0.05 * aug.tones(15 * RATE, np.random.default_rng(3))).astype(np.float32)
    audio = np.concatenate([first, music, second])
    gap = (first.shape[0] / RATE, (first.shape[0] + music.shape[0]) / RATE)
    wav = encode(audio, RATE)
    files = {"audio": ("a.wav", wav, "audio/wav")}
    r = httpx.post(vad_server.url + "/transcribe", files=files, data={"timestamps": "true"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    segments = body["segments"]
    assert len(segments) >= 2 and all(s["end"] - s["start"] <= 10.0 for s in segments)
    assert all(s["end"] <= gap[0] + 1.0 or s["start"] >= gap[1] - 1.0 for s in segments)  # the music is not sent
    assert 10 < body["speech_s"] < body["duration_s"] - 14
    assert all(0 <= s["no_speech_prob"] < 0.5 for s in segments)
    assert all(any(s["start"] <= w["start"] <= w["end"] <= s["end"] for s in segments) for w in body["words"])
    paths = []
    decoded, _ = sf.read(io.BytesIO(wav), dtype="float32")
    for i, seg in enumerate(segments):
        path = tmp_path / f"seg{i}.wav"
        sf.write(path, decoded[round(seg["start"] * RATE) : round(seg["end"] * RATE)], RATE, subtype="FLOAT")
        paths.append(str(path))
    hyps = tiny_char.model.transcribe(paths, batch_size=8, return_hypotheses=True, verbose=False)
    assert [s["text"] for s in segments] == [h.text for h in hyps]
    name = tiny_char.tag.split(":")[0]
    data = {"model": name, "response_format": "verbose_json"}
    verbose = httpx.post(vad_server.url + "/v1/audio/transcriptions", files={"file": files["audio"]}, data=data)
    assert [s["no_speech_prob"] for s in verbose.json()["segments"]] == [s["no_speech_prob"] for s in segments]
    from openai import OpenAI  # and as the OpenAI SDK reads it

    sdk = OpenAI(base_url=vad_server.url + "/v1", api_key="not-needed", timeout=120)
    path = tmp_path / "speech.wav"
    path.write_bytes(wav)
    with path.open("rb") as f:
        got = sdk.audio.transcriptions.create(
            model=name, file=f, response_format="verbose_json", timestamp_granularities=["segment"]
        )
    assert got.segments and [s.no_speech_prob for s in got.segments] == [s["no_speech_prob"] for s in segments]


def test_vad_long_silence_is_empty(vad_server: Server) -> None:
    """A long recording without speech sends nothing to the model and says so."""

    def counters() -> dict[str, float]:
        text = httpx.get(vad_server.url + "/metrics", timeout=10).text
        found = re.findall(r"^asr_(audio|sent|speech)_seconds_total\{[^}]*\} (\S+)", text, re.M)
        return {name: float(value) for name, value in found}

    before = counters()
    wav = encode(speech.noise(40.0, 8, 0.001), RATE)
    body = httpx.post(vad_server.url + "/transcribe", files={"audio": ("a.wav", wav)}, timeout=60).json()
    assert body["text"] == "" and body["segments"] == [] and body["speech_s"] == 0.0
    assert body["duration_s"] == 40.0
    after = counters()  # 40 s of audio counted, none of it sent, no speech
    assert {k: round(after[k] - before.get(k, 0.0), 3) for k in after} == {"audio": 40.0, "sent": 0.0, "speech": 0.0}


def test_energy_cutting_reports_no_vad_figures(server: Server, tiny_char: Exported) -> None:
    wav = encode(speech.joined(speech.SENTENCES, pause_s=0.6)[0], RATE)
    body = httpx.post(server.url + "/transcribe", files={"audio": ("a.wav", wav)}, timeout=60).json()
    assert "speech_s" not in body and all("no_speech_prob" not in s for s in body["segments"])
    data = {"model": tiny_char.tag.split(":")[0], "response_format": "verbose_json"}
    verbose = httpx.post(server.url + "/v1/audio/transcriptions", files={"file": ("a.wav", wav)}, data=data).json()
    assert [s["no_speech_prob"] for s in verbose["segments"]] == [0.0] * len(body["segments"])


def test_subtitles_parse(server: Server, long_file: tuple[bytes, list[tuple[float, float]]]) -> None:
    wav = long_file[0]
    files = {"audio": ("a.wav", wav, "audio/wav")}
    subs = list(
        srt_lib.parse(
            httpx.post(server.url + "/transcribe", files=files, data={"response_format": "srt"}, timeout=600).text
        )
    )
    cues = list(
        webvtt.from_buffer(
            io.StringIO(
                httpx.post(server.url + "/transcribe", files=files, data={"response_format": "vtt"}, timeout=600).text
            )
        )
    )
    assert subs and len(subs) == len(cues)
    text = httpx.post(server.url + "/transcribe", files=files, data={"response_format": "text"}, timeout=600).text
    assert " ".join(s.content.replace("\n", " ") for s in subs).split() == text.split()


def test_openai_sdk_round_trip(server: Server, tmp_path: Path, tiny_char: Exported) -> None:
    from openai import OpenAI

    wav, _ = encode(speech.joined(speech.SENTENCES[:3], pause_s=0.5)[0], RATE), None
    path = tmp_path / "speech.wav"
    path.write_bytes(wav)
    files = {"audio": ("speech.wav", wav, "audio/wav")}
    ours = {
        fmt: httpx.post(server.url + "/transcribe", files=files, data={"response_format": fmt}, timeout=60).text
        for fmt in ("text", "srt", "vtt")
    }
    client = OpenAI(base_url=server.url + "/v1", api_key="not-needed", timeout=120)
    name = tiny_char.tag.split(":")[0]
    with path.open("rb") as f:
        assert client.audio.transcriptions.create(model=name, file=f).text == ours["text"]
    for fmt in ("text", "srt", "vtt"):
        with path.open("rb") as f:
            got = client.audio.transcriptions.create(model=name, file=f, response_format=fmt)  # type: ignore[call-overload]
        assert str(got).strip() == ours[fmt].strip(), fmt
    with path.open("rb") as f:
        verbose = client.audio.transcriptions.create(
            model=name,
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            language="mr",
            temperature=0.0,
        )
    assert verbose.text == ours["text"] and verbose.words and verbose.segments and verbose.language == "marathi"
    from openai import BadRequestError

    with path.open("rb") as f, pytest.raises(BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=f)
    assert "unknown model" in str(info.value) and name in str(info.value)
    assert [m.id for m in client.models.list()] == [name]


def test_openai_errors_have_openai_shape(server: Server) -> None:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as c:
            url = server.url + "/v1/audio/transcriptions"
            return [
                await c.post(url, files={"file": ("a.txt", b"words", "text/plain")}),
                await c.post(url, data={"model": "x"}),
                await c.post(
                    url,
                    files={"file": ("a.wav", encode(speech.noise(1, 1), RATE), "audio/wav")},
                    data={"response_format": "pdf"},
                ),
            ]

    for r, status in zip(asyncio.run(go()), (415, 400, 400), strict=True):
        assert r.status_code == status
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
