"""A short soak at saturation (benchmarks/soak.py runs the 10-minute one): nothing fails, nothing grows."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests import speech
from tests.audio_files import encode
from tests.conftest import Exported
from tests.load import soak
from tests.server import Server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")]
SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))


def test_short_soak(tiny_bpe: Exported, tmp_path: Path) -> None:
    payloads = [encode(speech.hindi(t), 16000) for t in speech.SENTENCES]
    payloads.append(encode(speech.joined(speech.SENTENCES, pause_s=0.5)[0], 16000))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "TMPDIR": str(tmp)}
    with Server(env, tmp_path / "soak.log") as server:
        report = asyncio.run(soak(server.url, payloads, SECONDS, 16, server.processes(), str(tmp)))
    print(
        f"soak {SECONDS:g} s: {report.requests} requests, statuses {report.statuses}, "
        f"RSS {report.rss_mb[0]:.0f}->{report.rss_mb[-1]:.0f} MB (growth {report.growth(report.rss_mb):+.1%}), "
        f"fds {report.fds[0]}->{report.fds[-1]}, temp files max {max(report.temp_files)}"
    )
    # Enough requests that a leak of the kinds below stands far above the noise.
    assert report.requests > 100 and report.failed == 0, (report.statuses, report.errors[:3])
    # Memory: before the fix of BentoML's timeout timers (service.patches._release_timeout_timers) every
    # answered request stayed in memory for 300 s, 70-100 KB each (+42 % in the 5-minute soak). The medians'
    # rise after warm-up, per request, must stay under half the smallest of those: 35 KB. (The 5 %
    # target is benchmarks/soak.py's, over 10 minutes; a 60-s rise in percent says more about the warm-up.)
    per_request_kb = report.rise(report.rss_mb) * 1024 / (report.requests * 0.6)
    print(f"RSS growth after warm-up: {per_request_kb:.0f} KB per request")
    assert per_request_kb < 35
    # Descriptors: at most 16 requests are in flight, each holding at most its upload, so the medians after
    # warm-up and at the end differ by at most 16 however the samples fall; a leak of one per request would
    # add > 60 (requests > 100, 60 % of them after warm-up). Every sample lies within the spread that 16
    # requests in flight can make: each holds its client's socket and its upload in the entry, and its one
    # segment's call to the recognizer at both ends (every payload is shorter than a segment): 4 x 16.
    assert report.rise(report.fds) <= 16
    assert max(report.fds) - min(report.fds) <= 4 * 16
    assert max(report.temp_files) <= 16  # at most one upload per request in flight
