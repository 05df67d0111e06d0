"""Soak and fuzz at saturation on 127.0.0.1 (bounded in time and count); writes benchmarks/results/soak.md.

    BENTOML_HOME=... python benchmarks/soak.py --model TAG [--seconds 600] [--concurrency 16] [--fuzz 1000]

The soak sends Hindi speech (espeak-ng) from `concurrency` clients for `seconds`, sampling the server
processes' RSS, open file descriptors and leftover upload files every second. The fuzz runs the test suite's
mutated-file property test (tests/test_hostile.py) with `fuzz` cases against its own server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import speech  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.load import soak  # noqa: E402
from tests.server import Server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny_conformer_ctc_bpe:latest")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fuzz", type=int, default=1000)
    args = parser.parse_args()

    payloads = [encode(speech.hindi(t), 16000) for t in speech.SENTENCES]
    payloads.append(encode(speech.joined(speech.SENTENCES, pause_s=0.5)[0], 16000))
    tmp = tempfile.mkdtemp(prefix="soak-tmp-")
    env = {"ASR_MODEL": args.model, "ASR_DEVICE": "cpu", "TMPDIR": tmp}
    with Server(env, Path(tmp) / "server.log") as server:
        report = asyncio.run(soak(server.url, payloads, args.seconds, args.concurrency, server.processes(), tmp))
    warm = max(1, len(report.rss_mb) // 5)
    lat = sorted(report.latencies)
    lines = [
        f"# Soak ({time.strftime('%Y-%m-%d')}): {args.seconds:g} s at {args.concurrency} concurrent clients",
        "",
        f"Model `{args.model}`; payloads: six espeak-ng Hindi sentences and their 15-s concatenation.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests | {report.requests} |",
        f"| statuses | {dict(sorted(report.statuses.items()))} |",
        f"| failed (non-200 or transport error) | {report.failed} |",
        f"| latency p50 / p95 (s) | {lat[len(lat) // 2]:.2f} / {lat[int(len(lat) * 0.95)]:.2f} |",
        f"| RSS, all server processes: start / end of warm-up (20 %) / end (MB) | "
        f"{report.rss_mb[0]:.0f} / {report.rss_mb[warm]:.0f} / {report.rss_mb[-1]:.0f} |",
        f"| RSS growth after warm-up | {report.growth(report.rss_mb):+.1%} "
        f"({(report.rss_mb[-1] - report.rss_mb[warm]) * 1024 / max(1, report.requests * 0.8):.0f} KB a request) |",
        f"| open fds: after warm-up / end | {report.fds[warm]} / {report.fds[-1]} |",
        f"| upload files left in the request dirs: max during / at end | {max(report.temp_files)} / "
        f"{report.temp_files[-1]} |",
    ]
    if args.fuzz:
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/test_hostile.py::test_fuzz_mutated_files", "-q", "-s"],
            cwd=ROOT,
            env={**os.environ, "FUZZ_EXAMPLES": str(args.fuzz)},
            capture_output=True,
            text=True,
        )
        summary = [line for line in out.stdout.splitlines() if line.startswith("fuzz:")]
        if out.returncode:  # say why, rather than only that it failed
            print(out.stdout[-4000:], out.stderr[-2000:], sep="\n", file=sys.stderr)
        lines += [
            f"| fuzz: mutated WAV/FLAC/MP3 files ({time.monotonic() - started:.0f} s) | "
            f"{summary[0] if summary else 'no summary'}; pytest exit {out.returncode} |"
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results" / "soak.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
