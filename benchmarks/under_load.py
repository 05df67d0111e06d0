"""Readiness and abandoned work under saturating load, with the `medium` architecture (the real model's
compute on random weights). Prints the figures and writes benchmarks/results/under_load.md.

    BENTOML_HOME=... python benchmarks/under_load.py [--model medium_conformer_ctc_bpe:latest] [--seconds 60]

1. Readiness: 16 clients post 30-s clips for --seconds while /readyz is polled every 0.2 s: the probes'
   statuses and latencies, and the requests' statuses (a 503 `not_ready` would be a healthy pod pulled).
2. Abandoned work: 16 clients upload a 10-minute file each and hang up once the recognizer is into their
   segments; the segments run after the hang-up, dropped unrun and never sent, and a 10-s request 5 s later
   against its idle latency.
The `medium` entry is exported when missing (`python -m export --config medium`).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.variants import cpu_name  # noqa: E402
from export.verify import speech_like  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402
from tests.test_under_load import segment_counts  # noqa: E402


def ensure_model(tag: str) -> str:
    import bentoml

    try:
        return str(bentoml.models.get(tag).tag)
    except Exception:
        subprocess.run([sys.executable, "-m", "export", "--config", "medium"], cwd=ROOT, check=True)
        return str(bentoml.models.get(tag).tag)


async def readiness(url: str, clip: bytes, seconds: float) -> tuple[list[tuple[int, float]], dict[str, int]]:
    probes: list[tuple[int, float]] = []
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def client() -> None:
        async with httpx.AsyncClient(timeout=600) as c:
            while time.monotonic() < deadline:
                r = await c.post(url + "/transcribe", files={"audio": ("a.wav", clip, "audio/wav")})
                key = str(r.status_code) if r.status_code == 200 else f"{r.status_code} {r.json().get('error')}"
                statuses[key] = statuses.get(key, 0) + 1

    async def poll() -> None:
        async with httpx.AsyncClient(timeout=60) as c:
            await asyncio.sleep(2)
            while time.monotonic() < deadline:
                t = time.monotonic()
                r = await c.get(url + "/readyz")
                probes.append((r.status_code, time.monotonic() - t))
                await asyncio.sleep(0.2)

    await asyncio.gather(poll(), *[client() for _ in range(16)])
    return probes, statuses


def ten_minutes() -> bytes:
    rng = np.random.default_rng(0)
    parts = []
    for i in range(40):  # 15-s utterance-like stretches with 0.5-s pauses: 40 segments
        parts += [speech_like(14.5, 16000, i), np.zeros(8000, np.float32)]
    buffer = io.BytesIO()
    audio = np.concatenate(parts)[: 600 * 16000] + 1e-4 * rng.standard_normal(600 * 16000)
    sf.write(buffer, audio.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def abandoned(url: str) -> dict[str, float]:
    long_file, ten = ten_minutes(), encode(speech_like(10.0, 16000, 99), 16000)

    def one() -> float:
        t = time.monotonic()
        assert httpx.post(url + "/transcribe", files={"audio": ("a.wav", ten)}, timeout=120).status_code == 200
        return time.monotonic() - t

    idle = min(one() for _ in range(3))
    before = segment_counts(url).get("run", 0.0)

    async def hang_up() -> dict[str, float]:
        async with httpx.AsyncClient(timeout=600) as c:
            tasks = [
                asyncio.create_task(c.post(url + "/transcribe", files={"audio": ("a.wav", long_file)}))
                for _ in range(16)
            ]
            while segment_counts(url).get("run", 0.0) < before + 16:
                await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            at = segment_counts(url)
            await asyncio.gather(*tasks, return_exceptions=True)
            return at

    at = asyncio.run(hang_up())
    time.sleep(5)
    later = segment_counts(url)
    after = min(one() for _ in range(3))
    return {
        "segments": 16 * 40,
        "run_before": at.get("run", 0.0) - before,
        "run_after": later.get("run", 0.0) - at.get("run", 0.0),
        "dropped": later.get("dropped", 0.0),
        "idle_s": idle,
        "after_s": after,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="medium_conformer_ctc_bpe:latest")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    tag = ensure_model(args.model)
    clip = encode(speech_like(30.0, 16000, 3), 16000)
    with Server({"ASR_MODEL": tag, "ASR_DEVICE": "cpu"}, Path("/tmp") / "under-load.log") as server:
        probes, statuses = asyncio.run(readiness(server.url, clip, args.seconds))
        gone = abandoned(server.url)
    not_ok = sum(1 for s, _ in probes if s != 200)
    lat = sorted(d for _, d in probes)
    lines = [
        f"# Under load ({time.strftime('%Y-%m-%d')}, `{tag}`, {cpu_name()}, {os.cpu_count()} cores)",
        "",
        f"Readiness: 16 clients posting 30-s clips for {args.seconds:g} s, `/readyz` every 0.2 s.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| probes | {len(probes)} |",
        f"| probes other than 200 | {not_ok} |",
        f"| probe latency p50 / p95 / max | {lat[len(lat) // 2] * 1e3:.0f} / {lat[int(len(lat) * 0.95)] * 1e3:.0f} / "
        f"{lat[-1] * 1e3:.0f} ms |",
        f"| requests by status | {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))} |",
        "",
        "Abandoned work: 16 clients upload 10 minutes each (40 segments) and hang up once the recognizer is into",
        "their segments; a 10-s request 5 s later.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| segments of the abandoned requests | {gone['segments']:.0f} |",
        f"| run before the hang-up / after it (the batch running) | {gone['run_before']:.0f} / "
        f"{gone['run_after']:.0f} |",
        f"| dropped from the queue unrun | {gone['dropped']:.0f} |",
        f"| never sent | {gone['segments'] - gone['run_before'] - gone['run_after'] - gone['dropped']:.0f} |",
        f"| 10-s request: idle / 5 s after the hang-up | {gone['idle_s'] * 1e3:.0f} / {gone['after_s'] * 1e3:.0f} ms "
        f"({gone['after_s'] / gone['idle_s']:.2f}x) |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results" / "under_load.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
