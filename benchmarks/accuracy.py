"""Accuracy beside speed: the demo model (demo/, the one model here that hears) through the service over HTTP,
on the held-out sentences in the model card's conditions, with the throughput of the same run.

    python benchmarks/accuracy.py [--sentences 100] [--clients 4]

Exports demo/stt_hi_demo_conformer_ctc.nemo into a temporary model store, serves it with `bentoml serve` on
127.0.0.1, sends every condition's clips with --clients concurrent clients, and writes
benchmarks/results/accuracy.md: CER and WER per condition, and the real-time factor of the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.evaluate import conditions  # noqa: E402
from demo.metrics import cer, wer  # noqa: E402
from demo.text import read_heldout  # noqa: E402
from export.variants import cpu_name  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402


async def transcribe_each(url: str, wavs: list[bytes], clients: int, timeout: float = 300) -> list[dict[str, Any]]:
    """Every file's JSON answer from /transcribe, `clients` requests in flight at a time."""
    bodies: list[dict[str, Any]] = [{}] * len(wavs)
    queue = list(enumerate(wavs))

    async def client() -> None:
        async with httpx.AsyncClient(timeout=timeout) as c:
            while queue:
                i, wav = queue.pop()
                r = await c.post(url + "/transcribe", files={"audio": ("a.wav", wav, "audio/wav")})
                r.raise_for_status()
                bodies[i] = r.json()

    await asyncio.gather(*[client() for _ in range(clients)])
    return bodies


async def transcribe_all(url: str, wavs: list[bytes], clients: int) -> list[str]:
    return [str(body["text"]) for body in await transcribe_each(url, wavs, clients)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="asr-accuracy-"))
    os.environ["BENTOML_HOME"] = str(home)
    from export.__main__ import main as export_main

    checkpoint = ROOT / "demo" / "stt_hi_demo_conformer_ctc.nemo"
    assert export_main(["--nemo", str(checkpoint), "--name", "stt_hi_demo_conformer_ctc"]) == 0
    sentences = read_heldout()[: args.sentences]
    audio = conditions(sentences)
    rows, total_audio, total_wall = [], 0.0, 0.0
    with Server({"ASR_MODEL": "stt_hi_demo_conformer_ctc:latest", "ASR_DEVICE": "cpu"}, home / "server.log") as s:
        for name, clips in audio.items():
            wavs = [encode(c, 16000) for c in clips]
            started = time.monotonic()
            hyps = asyncio.run(transcribe_all(s.url, wavs, args.clients))
            wall = time.monotonic() - started
            seconds = sum(c.shape[0] for c in clips) / 16000
            total_audio, total_wall = total_audio + seconds, total_wall + wall
            rows.append(f"| {name} | {cer(sentences, hyps):.1%} | {wer(sentences, hyps):.1%} | {seconds / wall:.0f} |")
            print(rows[-1], file=sys.stderr)
    text = "\n".join(
        [
            f"# Accuracy beside speed: the demo model through the service ({time.strftime('%Y-%m-%d')})",
            "",
            f"`stt_hi_demo_conformer_ctc` (demo/MODEL_CARD.md) served by `bentoml serve` on 127.0.0.1, "
            f"{args.clients} concurrent clients, {len(sentences)} held-out sentences per condition; "
            f"{cpu_name()}, {os.cpu_count()} cores.",
            "",
            "| condition | CER | WER | RTFx |",
            "|---|---|---|---|",
            *rows,
            "",
            f"All conditions: {total_audio / 60:.1f} minutes of audio in {total_wall:.1f} s, RTFx "
            f"{total_audio / total_wall:.0f}.",
        ]
    )
    print(text)
    (ROOT / "benchmarks" / "results" / "accuracy.md").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
