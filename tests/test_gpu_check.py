"""benchmarks/gpu_check.py --smoke: the GPU check's code, run on the CPU so that it never rots (the full check
needs an NVIDIA GPU; its figures are in docs/benchmarks.md when one was at hand)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import speech

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not speech.have_espeak(), reason="espeak-ng and sox are needed for Hindi speech"),
]


def test_gpu_check_smoke(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home")}
    run = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = out.read_text()
    sections = (
        "## Parity with the CPU graph",
        "## Raw session",
        "## Service (HTTP)",
        "## Streaming",
        "Peak GPU memory",
    )
    for section in sections:
        assert section in text, section
    # the GPU code paths (fixed shapes, greedy head by I/O binding) gave the CPU graph's tokens on every clip
    assert "| CPU provider, GPU code paths | CPUExecutionProvider |" in text and "| 8/8 |" in text
    assert "not run" not in text
    served = text.split("## Service (HTTP)")[1].split("## Streaming")[0]
    rows = [line for line in served.splitlines() if line.startswith(("| 1 |", "| 4 |"))]
    assert len(rows) == 2  # the service at both client counts
    assert "One 10-s request" in text
    streams = [line for line in text.split("## Streaming")[1].splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(streams) == 2 and all(line.endswith("| yes |") for line in streams)  # completed = replayed text
