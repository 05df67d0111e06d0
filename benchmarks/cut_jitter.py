"""How far the long-audio benchmark's reference moves when its cuts move: the per-sentence WER of
benchmarks/long_audio.py (each sentence sent alone, cut in the middle of the pauses around it) again with every
cut moved by its own random amount within +-0.1 s, for several seeds, against file 0's long WER that
benchmarks/results/long_audio.md holds.

    python benchmarks/cut_jitter.py [--seeds 5]

The same file (long_audio.py's file 0), mixes, demo model and server settings as benchmarks/long_audio.py. Writes
benchmarks/results/cut_jitter.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import transcribe_each  # noqa: E402
from benchmarks.long_audio import RATE, RESULTS, export_demo, file_mixes  # noqa: E402
from benchmarks.vad import Audio  # noqa: E402
from demo.metrics import wer  # noqa: E402
from export.variants import cpu_name  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402

JITTER_S = 0.1
OUT = ROOT / "benchmarks" / "results" / "cut_jitter.md"


def long_wers() -> dict[str, float]:
    """File 0's long WER (ASR_SEGMENT_TARGET=model) per audio, from benchmarks/results/long_audio.md."""
    table = RESULTS.read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([a-z]+(?: \d+ dB)?) \| 0 \| [\d.]+% \| ([\d.]+)% \|", table, re.M)
    return {audio: float(w) / 100 for audio, w in rows}


def clips(mix: Audio, spans: list[tuple[int, int]], seed: int | None) -> list[bytes]:
    """Each sentence from the middle of the pause before it to the middle of the pause after it; with a seed,
    each of those cuts moved by its own random amount within +-JITTER_S."""
    r = random.Random(seed)
    moved = [
        (spans[i][1] + spans[i + 1][0]) // 2 + (0 if seed is None else round(r.uniform(-JITTER_S, JITTER_S) * RATE))
        for i in range(len(spans) - 1)
    ]
    edges = [0, *moved, mix.shape[0]]
    return [encode(mix[edges[i] : edges[i + 1]], RATE) for i in range(len(spans))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="asr-cut-jitter-"))
    os.environ["BENTOML_HOME"] = str(home)
    tag, _ = export_demo(home)
    texts, spans, mixes = file_mixes(10.0)
    long = long_wers()
    env = {"ASR_MODEL": tag, "ASR_DEVICE": "cpu", "ASR_SEGMENTER": "vad", "ASR_TIMEOUT_S": "1200"}
    env["BENTOML_HOME"] = str(home)
    lines = [
        f"# The per-sentence reference under moved cuts ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/cut_jitter.py`: benchmarks/long_audio.py's file 0 ({len(texts)} sentences, 10 minutes) "
        f"and mixes, each sentence sent alone to the demo model (`bentoml serve`; {cpu_name()}, {os.cpu_count()} "
        f"cores): cut in the middle of the pauses around it (as long_audio.py does), then with every cut moved by "
        f"its own random amount within +-{JITTER_S:g} s, {args.seeds} seeds. Long: file 0's long WER with "
        "ASR_SEGMENT_TARGET=model from benchmarks/results/long_audio.md (its table of each file alone).",
        "",
        "| audio | per sentence, mid-pause cuts | moved cuts: mean | sd | min | max | long | long - mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with Server(env, home / "server.log") as server:
        for audio, mix in mixes.items():

            def per_sentence(seed: int | None, mix: Audio = mix) -> float:
                answers = asyncio.run(transcribe_each(server.url, clips(mix, spans, seed), 4, 1200))
                return wer(texts, [str(b["text"]) for b in answers])

            exact = per_sentence(None)
            moved = [per_sentence(seed) for seed in range(args.seeds)]
            mean, sd = float(np.mean(moved)), float(np.std(moved, ddof=1))
            row = (
                f"| {audio} | {exact:.1%} | {mean:.1%} | {sd * 100:.2f} pt | {min(moved):.1%} | {max(moved):.1%} "
                f"| {long[audio]:.1%} | {(long[audio] - mean) * 100:+.1f} pt |"
            )
            print(row, file=sys.stderr, flush=True)
            lines.append(row)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(OUT.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
