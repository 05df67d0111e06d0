"""The service against a bare ONNX Runtime session on the same graph, at 1, 4, 8 and 16 concurrent clients.

    python benchmarks/throughput.py [--config medium] [--rounds 3] [--env NAME=VALUE ...] [--label TEXT]

Exports the architecture (seeded random weights: the compute is the real model's) into a temporary store, or
serves ASR_MODEL from $BENTOML_HOME when it is set. 16 espeak-ng Hindi clips of 5-15 s. At each concurrency,
paired rounds: one pass of the bare session over the clips (batch 1, in this process, ORT's defaults), then
one pass of the service over HTTP; the ratio service/bare is taken within each round (this machine drifts by
10-25 % over minutes) and its median reported. `--env` sets server settings (e.g. ASR_ORT_SPINNING=false) to
compare configurations. Appends a table to benchmarks/results/throughput.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.suite import clients, ort_session, paired_rounds, run_batches  # noqa: E402
from export.variants import cpu_name  # noqa: E402
from tests import speech  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402

RATE = 16000
RESULTS = ROOT / "benchmarks" / "results" / "throughput.md"
CONCURRENCY = (1, 4, 8, 16)


def clips16() -> list[np.ndarray]:
    """16 clips of about 5-15 s: one to three sentences joined with pauses."""
    s = speech.SENTENCES
    groups = [[s[i % len(s)], s[(i + 1) % len(s)], s[(i + 2) % len(s)]][: 1 + i % 3] for i in range(16)]
    out = []
    for group in groups:
        audio = speech.joined(group, pause_s=0.5)[0] if len(group) > 1 else speech.hindi(group[0])
        if audio.shape[0] < 5 * RATE:  # pad a short sentence to 5 s with its own repetition
            audio = np.tile(audio, int(np.ceil(5 * RATE / audio.shape[0])))[: 5 * RATE]
        out.append(audio[: 15 * RATE])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="medium")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="a server setting NAME=VALUE (repeatable)")
    parser.add_argument("--label", default="")
    args = parser.parse_args()

    tag = os.environ.get("ASR_MODEL", "")
    if not tag:
        os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="asr-throughput-"))
        subprocess.run([sys.executable, "-m", "export", "--config", args.config], cwd=ROOT, check=True)
    import bentoml

    if not tag:
        tag = str(max(bentoml.models.list(), key=lambda m: m.info.creation_time).tag)
    graph = Path(bentoml.models.get(tag).path) / "model.onnx"
    clips = clips16()
    audio_s = sum(c.shape[0] for c in clips) / RATE
    payloads = [encode(c, RATE) for c in clips]
    bare = ort_session(graph, "cpu")
    settings = dict(e.split("=", 1) for e in args.env)
    env = {"ASR_MODEL": tag, "ASR_DEVICE": "cpu", **settings}
    machine = f"{cpu_name()}, {os.cpu_count()} cores"
    print(f"{len(clips)} clips, {audio_s:.1f} s of audio; {machine}; server settings {settings or 'defaults'}")
    rows = []
    with Server(env, Path(tempfile.mkdtemp()) / "server.log") as server:
        asyncio.run(clients(server.url, payloads[:4], 4))  # warm-up
        run_batches(bare, clips[:2], 1)
        for concurrency in CONCURRENCY:
            rounds = paired_rounds(bare, clips, server.url, payloads, concurrency, args.rounds)
            raw_rtfx, served_rtfx = [r for r, _ in rounds], [s for _, s in rounds]
            ratios = [s / r for r, s in rounds]
            row = (concurrency, statistics.median(raw_rtfx), statistics.median(served_rtfx), statistics.median(ratios))
            rows.append(row)
            print(f"  {concurrency:>2} clients: bare RTFx {row[1]:6.1f}  service {row[2]:6.1f}  ratio {row[3]:.3f}")
    label = args.label or (", ".join(args.env) or "defaults")
    lines = [
        f"\n### {time.strftime('%Y-%m-%d %H:%M')} · {args.config} · {label}\n",
        f"{machine}; {len(clips)} clips, {audio_s:.0f} s; {args.rounds} paired rounds per row (medians).\n",
        "| clients | bare ORT RTFx | service RTFx | service / bare |",
        "|---|---|---|---|",
        *[f"| {c} | {r:.1f} | {s:.1f} | {x:.3f} |" for c, r, s, x in rows],
    ]
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
