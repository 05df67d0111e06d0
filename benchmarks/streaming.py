"""Streaming transcription (ws /v1/realtime): how many live streams one machine carries, how fast turns end, and
what streaming costs in accuracy.

    python benchmarks/streaming.py [--streams 1,2,4,8,12,16] [--sentences 100]

1. Load (`medium` architecture, seeded random weights: the real model's compute): N streams at once, each a
   24-s clip sent at real-time pace in 100-ms pieces (16-bit PCM at 16 kHz, explicit commit at the end),
   starts spread over one chunk. A delta's latency: from the moment the audio completing the chunk it came
   from was sent to its arrival (the chunk is found by replaying the same buffered inference here). Target:
   p95 <= chunk + 0.5 s. Also the final transcript's latency after the commit.
2. Turns (demo model, server_vad, silence 500 ms): 20 held-out sentences with 1.5-s pauses at real-time pace;
   speech_stopped after the last speech sample was sent, less the silence duration (target <= 100 ms), and
   completed after speech_stopped (target <= 300 ms).
3. Accuracy (demo model): held-out sentences, clean and at 10 dB SNR, transcribed by /transcribe (offline,
   whole clip) and by a streaming session (one commit per sentence): WER of each.

Writes benchmarks/results/streaming.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.http_load import percentile  # noqa: E402
from tests import speech  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402

RATE = 16000
PIECE = 1600  # 100 ms: the load test's pieces
TURN_PIECE = 320  # 20 ms, as live audio comes (WebRTC frames): the turn test's
RESULTS = ROOT / "benchmarks" / "results" / "streaming.md"
Audio = npt.NDArray[np.float32]


def pcm16(audio: Audio) -> bytes:
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def heard(audio: Audio) -> Audio:
    return np.frombuffer(pcm16(audio), "<i2").astype(np.float32) / 32768.0


def export(*args: str) -> str:
    from export.__main__ import main as export_main

    assert export_main(list(args)) == 0
    import bentoml

    return str(max(bentoml.models.list(), key=lambda m: m.info.creation_time).tag)


# ---------------------------------------------------------------------------------------------- a session


async def session(url: str, update: dict[str, Any]) -> Any:
    import websockets

    ws = await websockets.connect(url.replace("http://", "ws://") + "/v1/realtime?intent=transcription", max_size=None)
    assert json.loads(await ws.recv())["type"] == "session.created"
    await ws.send(json.dumps({"type": "session.update", "session": update}))
    assert json.loads(await ws.recv())["type"] == "session.updated"
    return ws


def pcm_session(turn: dict[str, Any] | None) -> dict[str, Any]:
    return {"audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": turn}}}


async def paced(ws: Any, audio: Audio, start: float, sent_at: list[float], size: int = PIECE) -> None:
    """Send `audio` in pieces of `size` samples at real-time pace from `start`; sent_at[k]: when piece k went."""
    data = pcm16(audio)
    for k, i in enumerate(range(0, len(data), size * 2)):
        await asyncio.sleep(max(0.0, start + k * size / RATE - time.monotonic()))
        piece = base64.b64encode(data[i : i + size * 2]).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
        sent_at.append(time.monotonic())


# ---------------------------------------------------------------------------------------------- 1. load


def chunk_texts(model_dir: Path, manifest: Any, audio: Audio) -> tuple[list[int], list[int]]:
    """Replaying the buffered inference here (export.streaming.ours_buffered, fed as the clients feed): the text
    length after each buffer, and the sample that completes each buffer's chunk (the last chunks come from the
    commit's flush: sample = len(audio))."""
    from export.streaming import ours_buffered
    from service.recognition.tokens import Detokenizer

    detok = Detokenizer(manifest.vocabulary, manifest.tokenizer)
    lengths, completes = [], []

    def record(stream: Any, samples: int) -> None:
        lengths.append(len(detok.text(stream.tokens)))
        completes.append(samples)

    ours_buffered(model_dir, manifest.streaming, manifest, audio, PIECE, record)
    return lengths, completes


async def one_stream(url: str, audio: Audio, start: float, lengths: list[int], completes: list[int]) -> dict[str, Any]:
    ws = await session(url, pcm_session(None))
    sent_at: list[float] = []
    arrivals: list[tuple[float, int]] = []  # (time, text length so far)
    done: dict[str, Any] = {}

    async def receive() -> None:
        text = ""
        while True:
            event = json.loads(await ws.recv())
            if event["type"].endswith(".delta"):
                text += event["delta"]
                arrivals.append((time.monotonic(), len(text)))
            elif event["type"].endswith(".completed"):
                done.update(event, at=time.monotonic())
                return
            elif event["type"] == "error":
                raise RuntimeError(event)

    receiver = asyncio.create_task(receive())
    await paced(ws, audio, start, sent_at)
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    committed = time.monotonic()
    await receiver
    await ws.close()
    latencies = []
    for at, length in arrivals:
        k = next(i for i, n in enumerate(lengths) if n >= length)  # the buffer that made this much text
        if completes[k] >= audio.shape[0]:
            continue  # from the commit's flush: counted as the final latency
        piece = completes[k] // PIECE - (1 if completes[k] % PIECE == 0 else 0)
        latencies.append(at - sent_at[piece])
    return {"latencies": latencies, "final": done["at"] - committed, "text_ok": len(done["transcript"]) == lengths[-1]}


def load_stats(
    url: str, model_dir: Path, manifest: Any, counts: list[int], seconds: float = 24.0
) -> Iterator[dict[str, Any]]:
    """Per stream count, as its run ends: each stream `seconds` of speech at real-time pace; partial latencies'
    p50 and p95, the final transcripts' p50 and max (s), and whether every completed text is the replayed one."""
    audio = heard(speech.joined(speech.SENTENCES * 3, pause_s=0.4)[0][: int(seconds * RATE)])
    lengths, completes = chunk_texts(model_dir, manifest, audio)
    chunk = manifest.streaming.chunk_s
    for n in counts:

        async def run(n: int = n) -> list[dict[str, Any]]:
            t0 = time.monotonic() + 0.5
            starts = [t0 + chunk * i / n for i in range(n)]
            return list(await asyncio.gather(*(one_stream(url, audio, s, lengths, completes) for s in starts)))

        results = asyncio.run(run())
        partial = [x for r in results for x in r["latencies"]]
        final = [r["final"] for r in results]
        yield {
            "streams": n,
            "p50": statistics.median(partial),
            "p95": percentile(partial, 0.95),
            "final_p50": statistics.median(final),
            "final_max": max(final),
            "text_ok": all(r["text_ok"] for r in results),
        }


def load(url: str, model_dir: Path, manifest: Any, counts: list[int], seconds: float = 24.0) -> list[str]:
    """One table row per stream count (load_stats; benchmarks/gpu_check.py runs this too)."""
    chunk = manifest.streaming.chunk_s
    rows = []
    for r in load_stats(url, model_dir, manifest, counts, seconds):
        rows.append(
            f"| {r['streams']} | {r['p50']:.2f} | {r['p95']:.2f} | {'yes' if r['p95'] <= chunk + 0.5 else 'no'} | "
            f"{r['final_p50']:.2f} | {r['final_max']:.2f} | {'yes' if r['text_ok'] else 'NO'} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- 2. turns


def turns(url: str, sentences: list[str]) -> tuple[list[float], list[float], list[float], int]:
    from demo.speech import speak, trim

    gap = np.zeros(int(1.5 * RATE), np.float32)
    parts, ends, t = [gap], [], gap.shape[0]
    for text in sentences:
        spoken = trim(speak(text))
        parts += [spoken, gap]
        ends.append(t + spoken.shape[0])
        t += spoken.shape[0] + gap.shape[0]
    audio = heard(np.concatenate(parts))
    silence_ms = 500

    async def run() -> tuple[list[float], list[float], list[float], int]:
        turn = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": silence_ms}
        ws = await session(url, pcm_session(turn))
        sent_at: list[float] = []
        stopped: list[tuple[float, int]] = []
        completed: list[float] = []

        async def receive() -> None:
            while len(completed) < len(sentences):
                event = json.loads(await ws.recv())
                if event["type"] == "input_audio_buffer.speech_stopped":
                    stopped.append((time.monotonic(), event["audio_end_ms"]))
                elif event["type"].endswith(".completed"):
                    completed.append(time.monotonic())

        receiver = asyncio.create_task(receive())
        await paced(ws, audio, time.monotonic() + 0.2, sent_at, TURN_PIECE)
        await asyncio.wait_for(receiver, 30)
        await ws.close()
        stop_lags, audio_lags = [], []
        for end, (at, end_ms) in zip(ends, stopped, strict=False):
            end_sent = sent_at[end // TURN_PIECE]  # the piece holding the last speech sample
            stop_lags.append(at - end_sent - silence_ms / 1000)
            audio_lags.append((end_ms - end * 1000 / RATE - silence_ms) / 1000)
        done_lags = [c - s for c, (s, _) in zip(completed, stopped, strict=False)]
        return stop_lags, audio_lags, done_lags, len(stopped)

    return asyncio.run(run())


# ---------------------------------------------------------------------------------------------- 3. accuracy


def streamed_texts(url: str, clips: list[Audio], streams: int = 4) -> list[str]:
    texts = [""] * len(clips)
    queue = list(enumerate(clips))

    async def worker() -> None:
        ws = await session(url, pcm_session(None))
        while queue:
            i, clip = queue.pop()
            data = base64.b64encode(pcm16(clip)).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": data}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            while True:
                event = json.loads(await ws.recv())
                if event["type"].endswith(".completed"):
                    texts[i] = event["transcript"]
                    break
                assert event["type"] != "error", event
        await ws.close()

    async def run() -> None:
        await asyncio.gather(*(worker() for _ in range(streams)))

    asyncio.run(run())
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,2,4,8,12,16")
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--load-only", action="store_true", help="only the load rows, printed (no results file)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="asr-streaming-"))
    os.environ["BENTOML_HOME"] = str(home)
    import bentoml

    from benchmarks.accuracy import transcribe_each
    from demo.evaluate import conditions
    from demo.metrics import wer
    from demo.text import read_heldout
    from export.variants import cpu_name
    from service.manifest import Manifest

    machine = f"{cpu_name()}, {os.cpu_count()} cores"
    medium = export("--config", "medium")
    medium_dir = Path(bentoml.models.get(medium).path)
    manifest = Manifest.read(medium_dir)
    counts = [int(c) for c in args.streams.split(",")]
    env = {"ASR_DEVICE": "cpu", "ASR_REALTIME_SESSIONS": str(max(counts) + 4)}
    with Server({**env, "ASR_MODEL": medium}, home / "medium.log") as s:
        load_rows = load(s.url, medium_dir, manifest, counts)
    if args.load_only:
        return
    demo = export(
        "--nemo", str(ROOT / "demo" / "stt_hi_demo_conformer_ctc.nemo"), "--name", "stt_hi_demo_conformer_ctc"
    )
    sentences = read_heldout()[: args.sentences]
    audio = conditions(sentences)
    accuracy_rows = []
    with Server({**env, "ASR_MODEL": demo}, home / "demo.log") as s:
        stop_lags, audio_lags, done_lags, turns_found = turns(s.url, read_heldout()[-20:])
        for name in ("clean", "10 dB SNR"):
            clips = [heard(c) for c in audio[name]]
            offline = [str(b["text"]) for b in asyncio.run(transcribe_each(s.url, [encode(c, RATE) for c in clips], 4))]
            streamed = streamed_texts(s.url, clips)
            same = sum(a == b for a, b in zip(offline, streamed, strict=True))
            accuracy_rows.append(
                f"| {name} | {wer(sentences, offline):.1%} | {wer(sentences, streamed):.1%} | {same}/{len(clips)} |"
            )
            print(accuracy_rows[-1], file=sys.stderr, flush=True)
    chunk = manifest.streaming.chunk_s
    within = [n for n, row in zip(counts, load_rows, strict=True) if row.split("|")[4].strip() == "yes"]
    carried = max(within, default=0)
    text = "\n".join(
        [
            f"# Streaming transcription (ws /v1/realtime), {time.strftime('%Y-%m-%d')}",
            "",
            f"`python benchmarks/streaming.py`; {machine}; `bentoml serve` on 127.0.0.1, ASR_DEVICE=cpu. Chunk "
            f"{chunk:g} s, buffer {manifest.streaming.buffer_s:g} s (NeMo's buffered CTC).",
            "",
            "## Live streams at real-time pace (`medium` architecture)",
            "",
            "Each stream: 24 s of speech in 100-ms pieces, commit at the end. Partial latency: from sending the "
            "audio that completes a chunk to the delta it yields; final: commit to completed.",
            "",
            f"| streams | partial p50 s | partial p95 s | p95 <= {chunk + 0.5:g} s | final p50 s | final max s | "
            "completed = replayed text |",
            "|---|---|---|---|---|---|---|",
            *load_rows,
            "",
            f"Most streams within the target: **{carried}**.",
            "",
            "## Turns (demo model, server_vad, silence 500 ms)",
            "",
            f"20 sentences with 1.5-s pauses sent in 20-ms pieces at real-time pace: {turns_found} turns. "
            "speech_stopped after the piece holding the last speech sample was sent, less the 500-ms silence: p50 "
            f"{statistics.median(stop_lags) * 1000:.0f} ms, max {max(stop_lags) * 1000:.0f} ms (target <= 100 ms); "
            "in the audio (audio_end_ms after the last speech sample, less 500 ms): p50 "
            f"{statistics.median(audio_lags) * 1000:.0f} ms, max {max(audio_lags) * 1000:.0f} ms. completed after "
            f"speech_stopped: p50 {statistics.median(done_lags) * 1000:.0f} ms, max {max(done_lags) * 1000:.0f} ms "
            "(target <= 300 ms).",
            "",
            f"## Accuracy (demo model, {len(sentences)} held-out sentences)",
            "",
            "| condition | WER offline (/transcribe) | WER streaming (one commit per sentence) | same text |",
            "|---|---|---|---|",
            *accuracy_rows,
            "",
        ]
    )
    print(text)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
