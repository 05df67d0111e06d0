"""Cost as the work grows: one request of 1 to 180 minutes, 1 to 8 models served, 1 to 64 live streams.

    python benchmarks/scale.py [--minutes 1,10,60,180] [--models 1,2,4,8] [--streams 1,8,32,64]

All three on the demo model (trained, small: what grows is the service's own work, not the model's), served by
`bentoml serve` on 127.0.0.1, ASR_DEVICE=cpu:
1. Requests: a file of held-out sentences (each at its own speed and pitch, 0.5 s apart; benchmarks/long_audio.py's
   10 minutes, repeated to length) sent as 16-bit WAV to POST /transcribe with timestamps=true, one request to a
   fresh server per length (the limits raised to let it in). Wall time per audio minute, the peak RSS of each
   process (sampled every 20 ms) and of all together, over the idle server's. Goals: time per minute at the
   longest <= 1.1x at 10 minutes; peak RSS at the longest <= 1.2x at 10 minutes.
2. Models: the demo export registered under n names, served together (ASR_MODELS); RSS of the recognizer and of
   all processes when ready and after four 10-s requests to each model; RSS per added model.
3. Streams: n realtime sessions at once, each 24 s of speech at real-time pace in 100-ms pieces
   (benchmarks/streaming.py's load: partial latency from the audio completing a chunk to its delta), and the
   CPU time of all server processes per stream and second of audio.
Writes benchmarks/results/scale.md and docs/scale.png.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import httpx
import numpy as np
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.long_audio import long_file  # noqa: E402
from benchmarks.models_memory import role  # noqa: E402
from benchmarks.report import publish  # noqa: E402
from export.variants import cpu_name  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402

RATE = 16000
NAME = "stt_hi_demo_conformer_ctc"
RESULTS = ROOT / "benchmarks" / "results" / "scale.md"
PLOT = ROOT / "docs" / "scale.png"
MB = 2**20


@dataclass
class Peak:
    """The highest RSS each role reached (its processes summed) and all processes together, sampled."""

    idle: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)


def rss_by_role(processes: list[tuple[psutil.Process, str]]) -> dict[str, float]:
    """RSS (MB) of the server's processes by role (models_memory.role), and of all of them."""
    usage: dict[str, float] = {"entry": 0.0, "recognizer": 0.0, "other": 0.0}
    for p, name in processes:
        try:
            usage[name] += p.memory_info().rss / MB
        except psutil.NoSuchProcess:
            continue
    usage["all"] = sum(usage.values())
    return usage


def with_roles(server: Server) -> list[tuple[psutil.Process, str]]:
    return [(p, role(p)) for p in server.processes()]


@contextmanager
def peak_rss(server: Server, every_s: float = 0.02) -> Iterator[Peak]:
    processes = with_roles(server)
    found = Peak(idle=rss_by_role(processes))
    found.peak = dict(found.idle)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for k, v in rss_by_role(processes).items():
                found.peak[k] = max(found.peak[k], v)
            done.wait(every_s)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield found
    finally:
        done.set()
        watcher.join()


def cpu_seconds(server: Server) -> float:
    total = 0.0
    for p in server.processes():
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def export_demo(home: Path) -> Path:
    """The demo model verified and written once (streaming graphs included), not registered."""
    out = home / "demo-export"
    nemo = str(ROOT / "demo" / f"{NAME}.nemo")
    subprocess.run(
        [sys.executable, "-m", "export", "--nemo", nemo, "--name", NAME, "--output", str(out), "--no-register"],
        cwd=ROOT,
        check=True,
        env={**os.environ, "BENTOML_HOME": str(home)},
    )
    return out


def register(home: Path, exported: Path, names: list[str]) -> list[str]:
    """The exported files registered under each name (the same model n times: n sessions to load)."""
    os.environ["BENTOML_HOME"] = str(home)
    from export.store import register as store
    from service.manifest import Manifest

    manifest = Manifest.read(exported)
    return [store(name, exported, manifest) for name in names]


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- 1. requests


def requests(home: Path, tag: str, base: np.ndarray, minutes: list[float], log_dir: Path) -> list[dict[str, Any]]:
    longest = max(minutes)
    env = {
        "BENTOML_HOME": str(home),
        "ASR_MODEL": tag,
        "ASR_DEVICE": "cpu",
        "ASR_MAX_UPLOAD_MB": str(int(longest * 60 * RATE * 2 / 1e6) + 64),
        "ASR_MAX_DURATION_S": str(int(longest * 60) + 60),
        "ASR_MAX_DECODED_MB": str(int(longest * 60 * RATE * 4 / MB) + 64),
        "ASR_TIMEOUT_S": "7200",
    }
    warm = encode(base[: 10 * RATE], RATE)
    rows = []
    for m in minutes:
        audio = np.resize(base, int(m * 60 * RATE)).astype(np.float32)
        wav = wav_bytes(audio)
        del audio
        with Server(env, log_dir / f"request-{m:g}.log") as server:
            httpx.post(server.url + "/transcribe", files={"audio": ("a.wav", warm)}, timeout=60).raise_for_status()
            time.sleep(1.0)
            with peak_rss(server) as memory:
                started = time.monotonic()
                r = httpx.post(
                    server.url + "/transcribe",
                    files={"audio": ("a.wav", wav, "audio/wav")},
                    data={"timestamps": "true"},
                    timeout=7200,
                )
                wall = time.monotonic() - started
            r.raise_for_status()
            body = r.json()
        row = {
            "minutes": m,
            "upload_mb": len(wav) / MB,
            "wall_s": wall,
            "per_minute_s": wall / m,
            "segments": len(body["segments"]),
            "words": len(body["words"]),
            "answer_mb": len(r.content) / MB,
            "idle": memory.idle,
            "peak": memory.peak,
        }
        rows.append(row)
        print(
            f"{m:g} min: {wall:.1f} s ({wall / m:.2f} s per minute), {row['segments']} segments, {row['words']} "
            f"words, answer {row['answer_mb']:.1f} MB; peak RSS {memory.peak} over idle {memory.idle}",
            flush=True,
        )
    return rows


# ---------------------------------------------------------------------------------------------- 2. models


def models(home: Path, tags: list[str], base: np.ndarray, counts: list[int], log_dir: Path) -> list[dict[str, Any]]:
    ten = encode(base[: 10 * RATE], RATE)
    rows = []
    for n in counts:
        env = {"BENTOML_HOME": str(home), "ASR_MODELS": ",".join(tags[:n]), "ASR_DEVICE": "cpu"}
        with Server(env, log_dir / f"models-{n}.log") as server:
            time.sleep(2.0)
            ready = rss_by_role(with_roles(server))
            with httpx.Client(timeout=300) as client:
                for tag in tags[:n]:
                    for _ in range(4):
                        files = {"audio": ("a.wav", ten, "audio/wav")}
                        client.post(server.url + "/transcribe", files=files, data={"model": tag}).raise_for_status()
            loaded = rss_by_role(with_roles(server))
        rows.append({"models": n, "ready": ready, "loaded": loaded})
        print(f"{n} model(s): ready {ready}, after requests {loaded}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- 3. streams


def streams(home: Path, tag: str, counts: list[int], log_dir: Path) -> list[dict[str, Any]]:
    import bentoml

    from benchmarks.streaming import load, load_stats
    from service.manifest import Manifest

    model_dir = Path(bentoml.models.get(tag).path)
    manifest = Manifest.read(model_dir)
    env = {
        "BENTOML_HOME": str(home),
        "ASR_MODEL": tag,
        "ASR_DEVICE": "cpu",
        "ASR_REALTIME_SESSIONS": str(max(counts) + 4),
    }
    rows = []
    chunk = manifest.streaming.chunk_s if manifest.streaming else 0.0
    with Server(env, log_dir / "streams.log") as server:
        load(server.url, model_dir, manifest, [1])  # warm-up
        before = cpu_seconds(server)
        for stats in load_stats(server.url, model_dir, manifest, counts, seconds=24.0):
            n = stats["streams"]
            spent = cpu_seconds(server) - before
            rows.append({**stats, "cpu_per_stream": spent / (n * 24.0), "chunk_s": chunk})
            print(
                f"{n} stream(s): {stats}; CPU {spent:.1f} s ({spent / (n * 24.0):.1%} of a core per stream)", flush=True
            )
            before = cpu_seconds(server)
    return rows


# ---------------------------------------------------------------------------------------------- report


def plot(req: list[dict[str, Any]], mod: list[dict[str, Any]], live: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if req:
        x = [r["minutes"] for r in req]
        ax = axes[0]
        ax.plot(x, [r["per_minute_s"] for r in req], "o-", color="C0", label="wall s per audio minute")
        ax.set_xscale("log")
        ax.set_xlabel("request length (min)")
        ax.set_ylabel("s per audio minute", color="C0")
        ax2 = ax.twinx()
        ax2.plot(x, [r["peak"]["all"] for r in req], "s--", color="C1", label="peak RSS, all processes")
        ax2.set_ylabel("peak RSS (MB)", color="C1")
        ax.set_title("one request")
    if mod:
        ax = axes[1]
        ax.plot([r["models"] for r in mod], [r["loaded"]["all"] for r in mod], "o-", label="all processes")
        ax.plot([r["models"] for r in mod], [r["loaded"]["recognizer"] for r in mod], "s--", label="recognizer")
        ax.set_xlabel("models served")
        ax.set_ylabel("RSS after requests (MB)")
        ax.legend()
        ax.set_title("models")
    if live:
        ax = axes[2]
        ax.plot([r["streams"] for r in live], [r["p95"] for r in live], "o-", color="C0")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("live streams")
        ax.set_ylabel("partial latency p95 (s)", color="C0")
        ax2 = axes[2].twinx()
        ax2.plot([r["streams"] for r in live], [100 * r["cpu_per_stream"] for r in live], "s--", color="C1")
        ax2.set_ylabel("% of a core per stream", color="C1")
        ax.set_title("realtime streams")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def report(req: list[dict[str, Any]], mod: list[dict[str, Any]], live: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"# Cost as the work grows ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/scale.py`; {cpu_name()}, {os.cpu_count()} cores; the demo model, `bentoml serve` on "
        "127.0.0.1, ASR_DEVICE=cpu. Plot: docs/scale.png.",
        "",
    ]
    if req:
        ten = next((r for r in req if r["minutes"] == 10), req[0])
        lines += [
            "## One request, 1 to 180 minutes",
            "",
            "POST /transcribe with timestamps=true, 16-bit WAV, one request to a fresh server. Peak RSS in MB "
            "(sampled every 20 ms), idle in brackets; time and memory ratios against the 10-minute request.",
            "",
            "| minutes | upload MB | wall s | s per audio minute | x 10 min | segments | words | answer MB | entry "
            "peak (idle) | recognizer peak (idle) | all processes peak (idle) | x 10 min |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in req:
            p, i = r["peak"], r["idle"]
            lines.append(
                f"| {r['minutes']:g} | {r['upload_mb']:.0f} | {r['wall_s']:.1f} | {r['per_minute_s']:.3f} | "
                f"{r['per_minute_s'] / ten['per_minute_s']:.2f} | {r['segments']} | {r['words']} | "
                f"{r['answer_mb']:.1f} | {p['entry']:.0f} ({i['entry']:.0f}) | {p['recognizer']:.0f} "
                f"({i['recognizer']:.0f}) | {p['all']:.0f} ({i['all']:.0f}) | {p['all'] / ten['peak']['all']:.2f} |"
            )
        last = req[-1]
        time_ratio = last["per_minute_s"] / ten["per_minute_s"]
        rss_ratio = last["peak"]["all"] / ten["peak"]["all"]
        lines += [
            "",
            f"At {last['minutes']:g} minutes: time per audio minute {time_ratio:.2f}x the 10-minute request's "
            f"(goal <= 1.1: {'met' if time_ratio <= 1.1 else 'missed'}); peak RSS {rss_ratio:.2f}x "
            f"(goal <= 1.2: {'met' if rss_ratio <= 1.2 else 'missed'}).",
            "",
        ]
    if mod:
        lines += [
            "## Models served together",
            "",
            "The demo export registered under n names (ASR_MODELS). RSS in MB when ready and after four 10-s "
            "requests to each model.",
            "",
            "| models | recognizer ready | recognizer after requests | entry after requests | all processes after "
            "requests | per added model (all, after requests) |",
            "|---|---|---|---|---|---|",
        ]
        for k, r in enumerate(mod):
            added = "-"
            if k:
                prev = mod[k - 1]
                added = f"+{(r['loaded']['all'] - prev['loaded']['all']) / (r['models'] - prev['models']):.0f}"
            lines.append(
                f"| {r['models']} | {r['ready']['recognizer']:.0f} | {r['loaded']['recognizer']:.0f} | "
                f"{r['loaded']['entry']:.0f} | {r['loaded']['all']:.0f} | {added} |"
            )
        lines.append("")
    if live:
        chunk = live[0]["chunk_s"]
        lines += [
            "## Live streams",
            "",
            "n realtime sessions at once, 24 s of speech each at real-time pace in 100-ms pieces, commit at the "
            f"end (chunk {chunk:g} s). CPU: all server processes' CPU time per stream and second of audio.",
            "",
            f"| streams | partial p50 s | partial p95 s | p95 <= {chunk + 0.5:g} s | final p50 s | final max s | "
            "completed = replayed text | CPU per stream (% of a core) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in live:
            lines.append(
                f"| {r['streams']} | {r['p50']:.2f} | {r['p95']:.2f} | {'yes' if r['p95'] <= chunk + 0.5 else 'no'} "
                f"| {r['final_p50']:.2f} | {r['final_max']:.2f} | {'yes' if r['text_ok'] else 'NO'} | "
                f"{100 * r['cpu_per_stream']:.1f} |"
            )
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,10,60,180")
    parser.add_argument("--models", default="1,2,4,8")
    parser.add_argument("--streams", default="1,8,32,64")
    parser.add_argument("--print-only", action="store_true", help="print the tables, write no results")
    args = parser.parse_args()

    def numbers(text: str) -> list[Any]:
        return [float(x) if "." in x else int(x) for x in text.split(",") if x.strip()]

    minutes, model_counts, stream_counts = numbers(args.minutes), numbers(args.models), numbers(args.streams)
    home = Path(tempfile.mkdtemp(prefix="asr-scale-"))
    exported = export_demo(home)
    names = [NAME] + [f"{NAME}_{k}" for k in range(2, max(model_counts, default=1) + 1)]
    tags = register(home, exported, names)
    base = long_file(10.0)[0]
    req = requests(home, tags[0], base, minutes, home) if minutes else []
    mod = models(home, tags, base, model_counts, home) if model_counts else []
    live = streams(home, tags[0], stream_counts, home) if stream_counts else []
    lines = report(req, mod, live)
    if args.print_only:
        print("\n".join(lines))
        return
    plot(req, mod, live)
    sys.exit(publish(RESULTS, lines))


if __name__ == "__main__":
    main()
