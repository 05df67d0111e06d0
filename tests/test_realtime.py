"""Streaming transcription over WebSocket (ws /v1/realtime?intent=transcription) through a real `bentoml serve`:
the `openai` SDK's realtime client, and raw WebSocket frames for what the SDK would not send."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soxr

from export.streaming import nemo_buffered
from tests import speech
from tests.conftest import Exported
from tests.server import Server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not speech.have_espeak(), reason="espeak-ng and sox are needed for Hindi speech"),
]
RATE = 16000


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def quantised(audio: np.ndarray) -> np.ndarray:
    """What the server hears of 16-bit PCM."""
    return np.frombuffer(pcm16(audio), "<i2").astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def server(tiny_bpe: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # one batch at a time in the recognizer (ASR_CPU_LANES=1): while a stream's buffer runs, the other streams'
    # buffers queue and go in the next batch together, however fast the machine is (with two lanes a loaded CI
    # machine once ran all of them one by one, and test_streams_share_the_batch_queue saw no batch of two)
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "ASR_CPU_LANES": "1"}
    with Server(env, tmp_path_factory.mktemp("logs") / "realtime.log") as s:
        yield s


def connect(url: str) -> Any:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    return client.realtime.connect(extra_query={"intent": "transcription"})


def session(fmt: dict[str, Any], turn: dict[str, Any] | None, logprobs: bool = False) -> dict[str, Any]:
    include = ["item.input_audio_transcription.logprobs"] if logprobs else []
    return {"type": "transcription", "audio": {"input": {"format": fmt, "turn_detection": turn}}, "include": include}


def until(conn: Any, kind: str, limit: int = 200) -> list[Any]:
    """Events up to and including the first of `kind` (an error event fails the test unless it is asked for)."""
    seen = []
    for _ in range(limit):
        event = conn.recv()
        seen.append(event)
        if event.type == kind:
            return seen
        assert event.type != "error", event.to_json()
    raise AssertionError(f"no {kind} in {[e.type for e in seen]}")


def send_audio(conn: Any, data: bytes, piece: int = 6400) -> None:
    for i in range(0, len(data), piece):
        conn.input_audio_buffer.append(audio=base64.b64encode(data[i : i + piece]).decode())


def test_sdk_commit_equals_nemo_buffered_inference(server: Server, tiny_bpe: Exported) -> None:
    """Explicit commits at 16 kHz: the completed transcript is NeMo's FrameBatchASR text on the same audio, the
    deltas add up to it, logprobs come when `include` asks, events in OpenAI's order."""
    model = tiny_bpe.model
    clips = [speech.hindi(speech.SENTENCES[0]), speech.joined(speech.SENTENCES[1:4], pause_s=0.6)[0]]
    with connect(server.url) as conn:
        created = conn.recv()
        assert created.type == "session.created" and created.session.type == "transcription"
        conn.session.update(session=session({"type": "audio/pcm", "rate": 16000}, None, logprobs=True))
        updated = conn.recv()
        assert updated.type == "session.updated" and updated.session.audio.input.format.rate == 16000
        assert updated.session.audio.input.turn_detection is None
        previous = None
        for audio in clips:
            heard = quantised(audio)
            want = model.tokenizer.ids_to_text(nemo_buffered(model, heard, 1.6, 4.0))
            send_audio(conn, pcm16(audio))
            conn.input_audio_buffer.commit()
            events = until(conn, "conversation.item.input_audio_transcription.completed")
            kinds = [e.type for e in events]
            committed = next(e for e in events if e.type == "input_audio_buffer.committed")
            assert (
                committed.previous_item_id == previous and kinds.index("input_audio_buffer.committed") < len(kinds) - 1
            )
            previous = committed.item_id
            done = events[-1]
            assert done.transcript == want and done.item_id == committed.item_id
            deltas = [e for e in events if e.type.endswith(".delta")]
            assert "".join(e.delta for e in deltas) == want and all(e.item_id == done.item_id for e in deltas)
            assert done.usage.type == "duration" and done.usage.seconds == pytest.approx(len(audio) / RATE, abs=1e-3)
            assert done.logprobs and all(p.logprob <= 0 and bytes(p.bytes).decode() == p.token for p in done.logprobs)
            assert "".join(p.token for p in done.logprobs).strip() == want.strip()


def test_24_khz_pcm_and_g711(server: Server, tiny_bpe: Exported) -> None:
    """OpenAI's default audio/pcm at 24 kHz is resampled along the stream (soxr, equal to resampling the whole
    clip at once); audio/pcmu at 8 kHz decodes as G.711 mu-law."""
    model = tiny_bpe.model
    audio = speech.hindi(speech.SENTENCES[2])
    at24 = soxr.resample(audio, RATE, 24000).astype(np.float32)
    heard = soxr.resample(quantised(at24), 24000, RATE).astype(np.float32)
    want = model.tokenizer.ids_to_text(nemo_buffered(model, heard, 1.6, 4.0))
    with connect(server.url) as conn:
        until(conn, "session.created")
        assert conn is not None
        conn.session.update(session=session({"type": "audio/pcm", "rate": 24000}, None))
        until(conn, "session.updated")
        # odd pieces: a sample's bytes split across appends, and the resampler keeps its state across them
        send_audio(conn, pcm16(at24), 4801)
        conn.input_audio_buffer.commit()
        assert until(conn, "conversation.item.input_audio_transcription.completed")[-1].transcript == want
        conn.session.update(session=session({"type": "audio/pcmu"}, None))
        until(conn, "session.updated")
        at8 = soxr.resample(audio, RATE, 8000).astype(np.float32)
        send_audio(conn, mulaw(at8))
        conn.input_audio_buffer.commit()
        done = until(conn, "conversation.item.input_audio_transcription.completed")[-1]
        assert done.usage.seconds == pytest.approx(len(at8) / 8000, abs=0.01) and done.transcript


def mulaw(audio: np.ndarray) -> bytes:
    """G.711 mu-law encoding (the inverse of the server's table, to within its quantisation)."""
    x = np.clip(audio, -1, 1) * 32767
    sign = (x < 0).astype(np.int32)
    magnitude = np.minimum(np.abs(x).astype(np.int32) + 0x84, 0x7FFF)
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~((sign << 7) | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def test_g711_tables_match_the_standard() -> None:
    """Both tables against the ITU-T G.711 reference values (as audioop had them)."""
    from service.audio.pcm import G711

    assert G711["pcmu"][0xFF] == 0 and G711["pcmu"][0x00] * 32768 == -32124 and G711["pcmu"][0x80] * 32768 == 32124
    assert G711["pcma"][0xD5] * 32768 == 8 and G711["pcma"][0x55] * 32768 == -8 and G711["pcma"][0xAA] * 32768 == 32256
    x = np.linspace(-0.9, 0.9, 999).astype(np.float32)
    back = G711["pcmu"][np.frombuffer(mulaw(x), np.uint8)]
    assert np.abs(back - x).max() < 0.03  # mu-law's coarsest step near full scale


def test_server_vad_turns(server: Server) -> None:
    """server_vad: each sentence is its own item (speech_started, speech_stopped, committed, completed);
    speech_started's audio_start_ms includes the prefix padding, speech_stopped comes within the silence
    duration + 100 ms of audio after the speech's end; silence and noise make no item."""
    sentences = [speech.hindi(t) for t in speech.SENTENCES[:2]]
    gap = np.zeros(int(1.5 * RATE), np.float32)
    audio = np.concatenate([gap, sentences[0], gap, sentences[1], gap, speech.noise(1.0, 3, 0.002), gap])
    starts = [gap.shape[0], 2 * gap.shape[0] + sentences[0].shape[0]]
    ends = [s + int(np.flatnonzero(np.abs(x) > 1e-3)[-1]) for s, x in zip(starts, sentences, strict=True)]
    turn = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
    with connect(server.url) as conn:
        until(conn, "session.created")
        conn.session.update(session=session({"type": "audio/pcm", "rate": 16000}, turn))
        assert until(conn, "session.updated")[-1].session.audio.input.turn_detection.silence_duration_ms == 500
        send_audio(conn, pcm16(audio), 3200)
        events = until(conn, "conversation.item.input_audio_transcription.completed")
        events += until(conn, "conversation.item.input_audio_transcription.completed")
        conn.input_audio_buffer.clear()  # nothing buffered: cleared, no item
        events += until(conn, "input_audio_buffer.cleared")
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e.type == "input_audio_buffer.speech_stopped"]
    done = [e for e in events if e.type.endswith(".completed")]
    assert len(started) == len(stopped) == len(done) == 2
    for i in range(2):
        assert started[i].item_id == stopped[i].item_id == done[i].item_id
        speech_start_ms = starts[i] * 1000 // RATE
        assert speech_start_ms - 300 - 100 <= started[i].audio_start_ms <= speech_start_ms - 300 + 200
        end_ms = ends[i] * 1000 // RATE
        assert 500 <= stopped[i].audio_end_ms - end_ms <= 500 + 100, (stopped[i].audio_end_ms, end_ms)
        assert done[i].transcript


from websockets.exceptions import ConnectionClosed  # noqa: E402


def raw(url: str, query: str = "intent=transcription") -> Any:
    from websockets.sync.client import connect as ws_connect

    return ws_connect(url.replace("http://", "ws://") + "/v1/realtime?" + query, open_timeout=10)


def next_event(ws: Any) -> dict[str, Any]:
    return dict(json.loads(ws.recv(timeout=30)))


def test_bad_events_get_error_events_and_the_session_goes_on(server: Server) -> None:
    with raw(server.url) as ws:
        assert next_event(ws)["type"] == "session.created"
        cases = [
            ("{not json", "invalid_json"),
            ("[" * 500_000 + "]" * 500_000, "invalid_json"),  # deeper than Python's parser goes
            ('{"type": "session.update", "session": ' + "[" * 200_000 + "]" * 200_000 + "}", "invalid_json"),
            ("[1, 2]", "invalid_event"),
            (json.dumps({"type": "response.create"}), "unknown_event"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "@@@not base64"}), "invalid_audio"),
            (json.dumps({"type": "input_audio_buffer.commit", "event_id": "mine"}), "input_audio_buffer_commit_empty"),
            (
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}},
                    }
                ),
                "invalid_value",
            ),
            (
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {"audio": {"input": {"transcription": {"model": "whisper-9"}}}},
                    }
                ),
                "unknown_model",
            ),
            (json.dumps({"type": "session.update", "session": {"type": "realtime"}}), "invalid_value"),
            (
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}},
                    }
                ),
                "invalid_value",
            ),
        ]
        for text, code in cases:
            ws.send(text)
            event = next_event(ws)
            assert event["type"] == "error" and event["error"]["code"] == code, (text, event)
            assert event["error"]["type"] == "invalid_request_error" and event["error"]["message"]
        assert event is not None
        # the commit's own event_id is echoed
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "mine"}))
        assert next_event(ws)["error"]["event_id"] == "mine"
        # and the session still works
        update = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}}}
        ws.send(json.dumps({"type": "session.update", "session": update}))
        assert next_event(ws)["type"] == "session.updated"
        audio = pcm16(speech.hindi(speech.SENTENCES[0]))
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}))
        # what is buffered was heard in this format, without turn detection: neither changes until it is committed
        vad = {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}}
        ws.send(json.dumps({"type": "session.update", "session": vad}))
        while (event := next_event(ws))["type"].endswith(".delta"):  # the appended audio's partial text first
            pass
        assert event["error"]["code"] == "audio_buffered"
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while (event := next_event(ws))["type"] != "conversation.item.input_audio_transcription.completed":
            assert event["type"] != "error", event
    with raw(server.url, "intent=conversation") as ws:
        event = next_event(ws)
        assert event["type"] == "error" and event["error"]["code"] == "invalid_intent"
        with pytest.raises(ConnectionClosed):  # closed by the server
            ws.recv(timeout=10)
        assert ws.close_code == 1008


def sessions_open(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("asr_realtime_sessions "):
            return float(line.split()[1])
    return 0.0


def test_session_limits_idle_and_vanishing_clients(tiny_bpe: Exported, tmp_path: Path) -> None:
    """ASR_REALTIME_SESSIONS=1: a second session gets an error and close code 1013; an idle session closes
    after ASR_REALTIME_IDLE_S; a session closes after ASR_REALTIME_MAX_S; a client that vanishes mid-stream
    frees its session at once. ASR_STREAM_CHUNK_S / ASR_STREAM_BUFFER_S: NeMo's buffered inference with those
    lengths."""
    env = {
        "ASR_MODEL": tiny_bpe.tag,
        "ASR_DEVICE": "cpu",
        "ASR_REALTIME_SESSIONS": "1",
        "ASR_REALTIME_IDLE_S": "1.5",
        "ASR_REALTIME_MAX_S": "4",
        "ASR_STREAM_CHUNK_S": "0.8",
        "ASR_STREAM_BUFFER_S": "2.4",
    }
    with Server(env, tmp_path / "limits.log") as s:
        # The limits' clocks start when the server opens the session, after `opened`: neither may end it
        # before its limit from `opened`. Late is allowed (a loaded machine answers late); never is not
        # (next_event waits 30 s at most).
        opened = time.monotonic()
        first = raw(s.url)
        assert next_event(first)["type"] == "session.created"
        with raw(s.url) as second:
            event = next_event(second)
            assert event["type"] == "error" and event["error"]["code"] == "too_many_sessions"
            with pytest.raises(ConnectionClosed):
                second.recv(timeout=10)
            assert second.close_code == 1013
        # idle: no event for 1.5 s
        event, ended = next_event(first), time.monotonic()
        assert event["error"]["code"] == "idle_timeout" and ended - opened >= 1.5 - 0.01
        with pytest.raises(ConnectionClosed):
            first.recv(timeout=10)
        first.close()
        # the longest session: events every 0.5 s keep it from idling, it still ends at 4 s
        opened = time.monotonic()
        with raw(s.url) as ws:
            next_event(ws)
            silence = base64.b64encode(pcm16(np.zeros(1600, np.float32))).decode()
            code, ended = None, 0.0
            while time.monotonic() - opened < 30:
                try:
                    ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": silence}))
                    message = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                except Exception:
                    break
                if error := json.loads(message).get("error", {}).get("code"):
                    code, ended = error, time.monotonic()
            assert code == "session_expired" and ended - opened >= 4 - 0.01
        # a client that vanishes mid-utterance
        ws = raw(s.url)
        next_event(ws)
        ws.send(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
        next_event(ws)
        audio = base64.b64encode(pcm16(speech.hindi(speech.SENTENCES[1]))).decode()
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        ws.socket.close()  # no close frame: gone
        deadline = time.monotonic() + 5
        while sessions_open(s.url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sessions_open(s.url) == 0
        with connect(s.url) as again:  # the slot is free; 0.8-s chunks in 2.4-s buffers
            assert until(again, "session.created")
            again.session.update(session=session({"type": "audio/pcm", "rate": 16000}, None))
            until(again, "session.updated")
            audio = speech.joined(speech.SENTENCES[2:4], pause_s=0.5)[0]
            send_audio(again, pcm16(audio))
            again.input_audio_buffer.commit()
            done = until(again, "conversation.item.input_audio_transcription.completed")[-1]
            model = tiny_bpe.model
            assert done.transcript == model.tokenizer.ids_to_text(nemo_buffered(model, quantised(audio), 0.8, 2.4))
            assert done.transcript != model.tokenizer.ids_to_text(nemo_buffered(model, quantised(audio), 1.6, 4.0))
        log = s.logs()
        assert "Traceback" not in log


@pytest.mark.parametrize("vad", [False, True])
def test_the_readme_example_streams_a_file(server: Server, tmp_path: Path, vad: bool) -> None:
    """examples/realtime_stream.py against the server: real-time pace, deltas printed, the transcript last."""
    import subprocess
    import sys

    import soundfile as sf

    audio = speech.joined(speech.SENTENCES[:2], pause_s=0.8)[0]
    path = tmp_path / "speech.wav"
    sf.write(path, audio, RATE)
    args = [sys.executable, "examples/realtime_stream.py", str(path), "--url", server.url, *(["--vad"] if vad else [])]
    started = time.monotonic()
    out = subprocess.run(args, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert time.monotonic() - started >= len(audio) / RATE  # real-time pace
    completed = [line for line in out.stdout.splitlines() if line.startswith("[completed ")]
    assert len(completed) == (2 if vad else 1) and all(line.split("] ", 1)[1].strip() for line in completed)


def test_streams_share_the_batch_queue(server: Server, tiny_bpe: Exported) -> None:
    """Six sessions streaming at once: every transcript is NeMo's buffered inference of its audio, and the
    model's streaming queue (`stream_<model>`) ran buffers of different streams together (batches > 1)."""
    import threading

    from tests.test_models import batched_items as batches

    name = tiny_bpe.tag.split(":")[0]
    before = batches(httpx.get(server.url + "/metrics", timeout=10).text, f"stream_{name}")
    clips = [speech.joined(speech.SENTENCES[i : i + 3], pause_s=0.3)[0] for i in range(6)]
    want = [tiny_bpe.model.tokenizer.ids_to_text(nemo_buffered(tiny_bpe.model, quantised(c), 1.6, 4.0)) for c in clips]
    got = [""] * len(clips)
    go = threading.Barrier(len(clips))

    def one(i: int) -> None:
        with connect(server.url) as conn:
            until(conn, "session.created")
            conn.session.update(session=session({"type": "audio/pcm", "rate": 16000}, None))
            until(conn, "session.updated")
            go.wait()
            send_audio(conn, pcm16(clips[i]), 3200)
            conn.input_audio_buffer.commit()
            got[i] = until(conn, "conversation.item.input_audio_transcription.completed")[-1].transcript

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == want
    after = batches(httpx.get(server.url + "/metrics", timeout=10).text, f"stream_{name}")
    buffers, runs = after[0] - before[0], after[1] - before[1]
    assert buffers > runs > 0  # some batch held buffers of more than one stream
