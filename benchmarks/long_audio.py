"""Long recordings heard as well as their sentences: segments that follow the model's training lengths.

    python benchmarks/long_audio.py [--minutes 10]

Builds a long file from held-out sentences the demo model never saw in training or tuning (demo/heldout.txt
from the 49th on), each at its own speed and pitch (130-210 words a minute, pitch 25-75, as demo/train.py varies
them), 0.5 s apart; then mixes it with pink noise, music-like tones and babble (other
held-out sentences) at 20, 10 and 5 dB SNR. For the clean file and each mix it sends, to the demo model served by
`bentoml serve` on 127.0.0.1 (ASR_SEGMENTER=vad):
- every sentence alone (its stretch of the file from the middle of the pause before it to the middle of the
  pause after it): the per-sentence WER, the reference;
- the whole file to a server whose VAD segments follow the model (ASR_SEGMENT_TARGET=model: shaped like the
  typical training utterance its manifest records) and to one whose segments grow to ASR_SEGMENT_S (=off, as
  before).
WER is corpus WER against the sentences joined. The goal: long-file WER at most per-sentence WER + 0.5 point.
Writes benchmarks/results/long_audio.md. --variants also varies the espeak-ng voice variant per sentence (a
harsher file: a segment of two sentences then holds two voices); --targets compares other ASR_SEGMENT_TARGET
values (printed, not written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import transcribe_each  # noqa: E402
from benchmarks.vad import NOISES, SNRS, Audio, cuts_inside, join_sentences, sentence_clips  # noqa: E402
from demo import augment as aug  # noqa: E402
from demo.metrics import wer  # noqa: E402
from demo.speech import VARIANTS, Voice, speak, trim  # noqa: E402
from demo.text import read_heldout  # noqa: E402
from export.variants import cpu_name  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402

RATE = 16000
GAP_S = 0.5
FIRST_UNSEEN = 48  # demo/train.py scores heldout[:48] while training (its dev set)
GOAL_POINTS = 0.5
RESULTS = ROOT / "benchmarks" / "results" / "long_audio.md"
TARGETS = ("model", "off")


def long_file(
    minutes: float, seed: int = 0, variants: bool = False
) -> tuple[Audio, list[str], list[tuple[int, int]], list[Audio]]:
    """The clean long file, its sentences, their spoken spans (samples), and voices for babble (the last ten
    held-out sentences, never in the file)."""
    sentences = read_heldout()[FIRST_UNSEEN:]
    rng = random.Random(seed)

    def say(text: str) -> Audio:
        variant = rng.choice(VARIANTS) if variants else ""
        return trim(speak(text, Voice(variant=variant, speed=rng.randint(130, 210), pitch=rng.randint(25, 75))))

    audio, texts, spans = join_sentences(sentences[:-10], say, lambda _: GAP_S, minutes)
    return audio, texts, spans, [speak(s) for s in sentences[-10:]]


def export_demo(home: Path) -> tuple[str, dict[str, Any]]:
    """The demo model in a store of its own; its tag and manifest's `training`."""
    checkpoint = ROOT / "demo" / "stt_hi_demo_conformer_ctc.nemo"
    name = "stt_hi_demo_conformer_ctc"
    subprocess.run(
        [sys.executable, "-m", "export", "--nemo", str(checkpoint), "--name", name, "--no-streaming"],
        cwd=ROOT,
        check=True,
        env={**os.environ, "BENTOML_HOME": str(home)},
    )
    (manifest,) = (home / "models" / name).glob("*/manifest.json")
    return f"{name}:latest", json.loads(manifest.read_text(encoding="utf-8")).get("training") or {}


def segment_lengths(body: dict[str, Any]) -> list[float]:
    return [float(s["end"]) - float(s["start"]) for s in body["segments"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="ASR_SEGMENT_TARGET values to compare (only the default writes)"
    )
    parser.add_argument("--variants", action="store_true", help="a voice variant per sentence too")
    args = parser.parse_args()
    targets = args.targets.split(",")
    home = Path(tempfile.mkdtemp(prefix="asr-long-audio-"))
    os.environ["BENTOML_HOME"] = str(home)
    tag, training = export_demo(home)
    clean, texts, spans, voices = long_file(args.minutes, variants=args.variants)
    total_s = clean.shape[0] / RATE
    print(f"{total_s / 60:.1f} min, {len(texts)} sentences; training {training}", file=sys.stderr)
    rng = np.random.default_rng(1)
    mixes: dict[tuple[str, float], Audio] = {("clean", 0.0): clean}
    mixes |= {
        (kind, snr): aug.add_noise(clean, aug.noise(kind, clean.shape[0], rng, voices), snr)
        for kind in NOISES
        for snr in SNRS
    }
    results: dict[tuple[str, float], dict[str, Any]] = {key: {} for key in mixes}
    for target in targets:
        env = {"ASR_MODEL": tag, "ASR_DEVICE": "cpu", "ASR_SEGMENTER": "vad", "ASR_SEGMENT_TARGET": target}
        env |= {"ASR_TIMEOUT_S": "1200", "BENTOML_HOME": str(home)}
        with Server(env, home / f"server-{target}.log") as server:
            for key, mix in mixes.items():
                if target == targets[0]:  # every clip is shorter than a segment: never cut, whatever the target
                    clips = [encode(c, RATE) for c in sentence_clips(mix, spans)]
                    hyps = [str(b["text"]) for b in asyncio.run(transcribe_each(server.url, clips, 4, 1200))]
                    results[key]["sentences"] = wer(texts, hyps)
                started = time.monotonic()
                (body,) = asyncio.run(transcribe_each(server.url, [encode(mix, RATE)], 1, 1200))
                lengths = segment_lengths(body)
                results[key][target] = {
                    "wer": wer([" ".join(texts)], [str(body["text"])]),
                    "cuts": cuts_inside(body, spans, total_s),
                    "segments": len(lengths),
                    "median_s": float(np.median(lengths)),
                    "longest_s": max(lengths),
                    "wall": time.monotonic() - started,
                }
                print(key, target, results[key]["sentences"], results[key][target], file=sys.stderr)
    if tuple(targets) == TARGETS and not args.variants:
        write(results, training, total_s, len(texts))


def write(results: dict[tuple[str, float], dict[str, Any]], training: dict[str, Any], total_s: float, n: int) -> None:
    longest = (
        f"median {training.get('median_s')} s, longest {training['max_s']:g} s ({training['source']})"
        if training
        else "not recorded"
    )
    lines = [
        f"# Long recordings against their sentences ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/long_audio.py`: one {total_s / 60:.1f}-minute file of {n} held-out sentences the demo "
        f"model never saw in training or tuning, each at its own speed and pitch, {GAP_S:g} s apart, clean and mixed "
        f"with each noise at each SNR; the demo model through `bentoml serve` with the VAD segmenter; {cpu_name()}, "
        f"{os.cpu_count()} cores. The model's training utterances (its manifest): {longest}. Per sentence: "
        "each sentence's stretch of the same audio sent alone. Long, model: ASR_SEGMENT_TARGET=model (speech "
        "regions share a segment while it stays within the median training utterance); long, off: they share one "
        "up to ASR_SEGMENT_S (30 s), as before. "
        f"Goal: long-file WER at most per-sentence WER + {GOAL_POINTS:g} point. Cuts: a segment's start or end, and "
        "how many of them fall inside a sentence's spoken span.",
        "",
        "| audio | WER per sentence | WER long, model | over per sentence | goal | WER long, off | over per sentence "
        "| segments model / off | median / longest segment, model (s) | cuts in a sentence, model |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (kind, snr), r in results.items():
        audio = "clean" if kind == "clean" else f"{kind} {snr:g} dB"
        m, o, ref = r["model"], r["off"], r["sentences"]
        met = "met" if m["wer"] - ref <= GOAL_POINTS / 100 + 1e-9 else "missed"
        lines.append(
            f"| {audio} | {ref:.1%} | {m['wer']:.1%} | {(m['wer'] - ref) * 100:+.1f} pt | {met} | {o['wer']:.1%} "
            f"| {(o['wer'] - ref) * 100:+.1f} pt | {m['segments']} / {o['segments']} "
            f"| {m['median_s']:.1f} / {m['longest_s']:.1f} | {m['cuts'][1]} of {m['cuts'][0]} |"
        )
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(RESULTS.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
