"""p50 latency of one 10-s request through the service next to one raw ONNX Runtime call on the same audio.

    BENTOML_HOME=... python benchmarks/latency.py --model medium_conformer_ctc_bpe:latest [--runs 20]

Both are measured in one run, interleaved (raw call, then HTTP request, repeated), after warm-up, on the
same machine; the service runs as `bentoml serve` on 127.0.0.1. Writes benchmarks/results/latency.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.verify import speech_like  # noqa: E402
from service.manifest import Manifest  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402


def interleaved(session: Any, audio: np.ndarray, wav: bytes, url: str, runs: int) -> tuple[list[float], list[float]]:
    """Seconds of one raw `session.run` and of one HTTP POST /transcribe on the same audio, alternately,
    `runs` times after 3 warm-ups of each: (raw, served)."""
    feed = {"audio": audio[None, :], "audio_lengths": np.array([audio.shape[0]], np.int64)}
    raw, served = [], []
    with httpx.Client(timeout=120) as client:
        for i in range(3 + runs):
            t = time.perf_counter()
            session.run(None, feed)
            raw_s = time.perf_counter() - t
            t = time.perf_counter()
            r = client.post(url + "/transcribe", files={"audio": ("a.wav", wav, "audio/wav")})
            served_s = time.perf_counter() - t
            assert r.status_code == 200, r.text
            if i >= 3:
                raw.append(raw_s)
                served.append(served_s)
    return raw, served


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="medium_conformer_ctc_bpe:latest")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    import bentoml

    from benchmarks.suite import ort_session

    entry = bentoml.models.get(args.model)
    manifest = Manifest.read(Path(entry.path))
    audio = speech_like(args.seconds, manifest.sample_rate, 7)
    wav = encode(audio, manifest.sample_rate)
    session = ort_session(Path(entry.path_of(manifest.graph.file)), "cpu")  # (its threads stop spinning after runs)
    log = Path("/tmp") / "latency-server.log"
    with Server({"ASR_MODEL": str(entry.tag), "ASR_DEVICE": "cpu"}, log) as server:
        raw, served = interleaved(session, audio, wav, server.url, args.runs)
    p50_raw, p50_served = statistics.median(raw), statistics.median(served)
    lines = [
        f"# Latency of one {args.seconds:g}-s request ({time.strftime('%Y-%m-%d')})",
        "",
        f"Model `{entry.tag}` ({manifest.name}, random weights, real architecture); {platform.processor() or 'CPU'}, "
        f"{__import__('os').cpu_count()} cores; {args.runs} interleaved runs after 3 warm-ups.",
        "",
        "| path | p50 (ms) | min (ms) | max (ms) |",
        "|---|---|---|---|",
        f"| raw ONNX Runtime `session.run` (in process) | {p50_raw * 1e3:.0f} | {min(raw) * 1e3:.0f} | "
        f"{max(raw) * 1e3:.0f} |",
        f"| service: HTTP POST /transcribe (16-bit WAV upload, decode, batcher, CTC, JSON) | {p50_served * 1e3:.0f} | "
        f"{min(served) * 1e3:.0f} | {max(served) * 1e3:.0f} |",
        "",
        f"Ratio service / raw at p50: **{p50_served / p50_raw:.2f}**.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "latency.md"
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
