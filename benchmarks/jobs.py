"""A long job beside interactive requests, with the `medium` architecture (the real model's compute on random
weights). Prints the figures and writes benchmarks/results/jobs.md.

    BENTOML_HOME=... python benchmarks/jobs.py [--model medium_conformer_ctc_bpe:latest] [--minutes 60]

One 10-s /transcribe request at a time: its latency idle (20 requests), then while a job of --minutes of audio
runs (one request after another until the job ends), then the job's own time (RTFx). The issue's target: while
an hour-long job runs, a 10-s request takes at most 2x its idle latency (p50). The job's segments are paced in
the entry (service/pipeline/client.py: one in flight on a CPU), so the interactive segment never queues behind a
job's window of segments.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.under_load import ensure_model  # noqa: E402
from export.variants import cpu_name  # noqa: E402
from export.verify import speech_like  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402


def ten_second_request(url: str, clip: bytes) -> float:
    started = time.monotonic()
    r = httpx.post(url + "/transcribe", files={"audio": ("a.wav", clip)}, timeout=300)
    assert r.status_code == 200, r.text
    return time.monotonic() - started


def main() -> int:
    from benchmarks.report import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="medium_conformer_ctc_bpe:latest")
    parser.add_argument("--minutes", type=float, default=60.0)
    args = parser.parse_args()
    tag = ensure_model(args.model)
    rng = np.random.default_rng(0)
    clip = encode(speech_like(10.0, 16000, 0), 16000)
    # the long file: speech-like stretches of 3-12 s with 0.5-s pauses (cut at the pauses, as real speech is)
    parts, total = [], 0.0
    while total < args.minutes * 60:
        seconds = float(rng.uniform(3, 12))
        parts += [speech_like(seconds, 16000, len(parts)), np.zeros(8000, np.float32)]
        total += seconds + 0.5
    long_file = encode(np.concatenate(parts)[: int(args.minutes * 60 * 16000)], 16000)
    del parts
    jobs_dir = tempfile.mkdtemp(prefix="asr-jobs-bench-")
    env = {
        "ASR_MODEL": tag,
        "ASR_DEVICE": "cpu",
        "ASR_JOBS_DIR": jobs_dir,
        "ASR_JOB_MAX_UPLOAD_MB": "2048",
        "ASR_SEGMENTER": "energy",
    }
    with Server(env, Path(jobs_dir) / "server.log") as server:
        for _ in range(3):
            ten_second_request(server.url, clip)
        idle = [ten_second_request(server.url, clip) for _ in range(20)]
        r = httpx.post(server.url + "/transcribe_job/submit", files={"audio": ("long.wav", long_file)}, timeout=600)
        assert r.status_code == 200, r.text
        task_id = r.json()["task_id"]
        submitted = time.monotonic()
        during: list[float] = []
        while True:
            status = httpx.get(server.url + "/transcribe_job/status", params={"task_id": task_id}, timeout=30).json()
            if status["status"] != "in_progress":
                break
            if status["state"] == "running":
                during.append(ten_second_request(server.url, clip))
            else:
                time.sleep(0.2)
        job_s = time.monotonic() - submitted
    assert status["status"] == "completed", status
    idle_p50, during_p50 = statistics.median(idle), statistics.median(during)
    during_p95 = float(np.percentile(during, 95))
    lines = [
        f"# A long job beside interactive requests ({time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} cores)",
        "",
        f"`python benchmarks/jobs.py --minutes {args.minutes:g}`: model `{tag}` (the `medium` architecture, "
        "random weights), "
        "`bentoml serve` on 127.0.0.1, ASR_DEVICE=cpu, energy cutting. One 10-s /transcribe request at a time, idle "
        f"and while a job of {args.minutes:g} minutes of audio runs.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| 10-s request, idle: p50 / max (20 requests) | {idle_p50 * 1000:.0f} / {max(idle) * 1000:.0f} ms |",
        f"| 10-s request while the job runs: p50 / p95 ({len(during)} requests) | {during_p50 * 1000:.0f} / "
        f"{during_p95 * 1000:.0f} ms |",
        f"| while the job runs / idle, p50 (target <= 2) | {during_p50 / idle_p50:.2f} |",
        f"| the job: {args.minutes:g} minutes of audio in | {job_s:.1f} s (RTFx {args.minutes * 60 / job_s:.1f}, "
        "interactive requests beside it) |",
    ]
    return publish(ROOT / "benchmarks" / "results" / "jobs.md", lines)


if __name__ == "__main__":
    sys.exit(main())
