"""Long recordings heard as well as their sentences: segments that follow the model's training lengths.

    python benchmarks/long_audio.py [--minutes 10] [--seeds 6]

Builds long files from held-out sentences the demo model never saw in training or tuning (demo/heldout.txt
from the 49th on; file 0 takes them in order, each further file a shuffled order), each sentence at its own speed
and pitch (130-210 words a minute, pitch 25-75, as demo/train.py varies them), 0.5 s apart; then mixes each with
pink noise, music-like tones and babble (other held-out sentences) at 20, 10 and 5 dB SNR. For each clean file and
mix it sends, to the demo model served by `bentoml serve` on 127.0.0.1 (ASR_SEGMENTER=vad):
- every sentence alone (its stretch of the file from the middle of the pause before it to the middle of the
  pause after it): the per-sentence WER, the reference;
- the whole file to a server whose VAD segments follow the model (ASR_SEGMENT_TARGET=model: shaped like the
  typical training utterance its manifest records; a segment still over twice that is heard again in pieces cut
  at its words' gaps, the surer hearing kept) and to one whose segments grow to ASR_SEGMENT_S (=off, as before).
WER is corpus WER over all files against their sentences joined (one file alone moves by about as much as the goal:
benchmarks/cut_jitter.py). The goal: long-file WER at most per-sentence WER + 0.5 point. Writes
benchmarks/results/long_audio.md. --variants also varies the espeak-ng voice variant per sentence (a harsher file:
a segment of two sentences then holds two voices); --targets compares other ASR_SEGMENT_TARGET values (printed,
not written).
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
SEEDS = 6  # one 10-minute file decides 0.5 point no better than its own cut placement (cut_jitter.py)


def long_file(
    minutes: float, seed: int = 0, variants: bool = False
) -> tuple[Audio, list[str], list[tuple[int, int]], list[Audio]]:
    """The clean long file, its sentences, their spoken spans (samples), and voices for babble (the last ten
    held-out sentences, never in the file). Seed 0 takes the sentences in their order; another seed a shuffled
    order (another set of sentences for a 10-minute file) and other voices."""
    sentences = read_heldout()[FIRST_UNSEEN:]
    rng = random.Random(seed)
    if seed:
        sentences[:-10] = rng.sample(sentences[:-10], len(sentences) - 10)

    def say(text: str) -> Audio:
        variant = rng.choice(VARIANTS) if variants else ""
        return trim(speak(text, Voice(variant=variant, speed=rng.randint(130, 210), pitch=rng.randint(25, 75))))

    audio, texts, spans = join_sentences(sentences[:-10], say, lambda _: GAP_S, minutes)
    return audio, texts, spans, [speak(s) for s in sentences[-10:]]


def file_mixes(
    minutes: float, seed: int = 0, variants: bool = False
) -> tuple[list[str], list[tuple[int, int]], dict[str, Audio]]:
    """File `seed`'s sentences, their spoken spans, and its audio by name: "clean" and each mix ("pink 20 dB")."""
    clean, texts, spans, voices = long_file(minutes, seed, variants)
    rng = np.random.default_rng(1 + seed)
    mixes = {"clean": clean}
    mixes |= {
        f"{kind} {snr:g} dB": aug.add_noise(clean, aug.noise(kind, clean.shape[0], rng, voices), snr)
        for kind in NOISES
        for snr in SNRS
    }
    return texts, spans, mixes


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
    parser.add_argument("--seeds", type=int, default=SEEDS, help="files, each of other sentences and voices")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="ASR_SEGMENT_TARGET values to compare (only the default writes)"
    )
    parser.add_argument("--variants", action="store_true", help="a voice variant per sentence too")
    args = parser.parse_args()
    targets = args.targets.split(",")
    home = Path(tempfile.mkdtemp(prefix="asr-long-audio-"))
    os.environ["BENTOML_HOME"] = str(home)
    tag, training = export_demo(home)
    files = [file_mixes(args.minutes, seed, args.variants) for seed in range(args.seeds)]
    for seed, (texts, _, mixes) in enumerate(files):
        print(f"seed {seed}: {mixes['clean'].shape[0] / RATE / 60:.1f} min, {len(texts)} sentences", file=sys.stderr)
    # results[audio][seed]: "sentences" (hypotheses), and per target its answer's text and segment facts
    results: dict[str, list[dict[str, Any]]] = {audio: [{} for _ in files] for audio in files[0][2]}
    for target in targets:
        env = {"ASR_MODEL": tag, "ASR_DEVICE": "cpu", "ASR_SEGMENTER": "vad", "ASR_SEGMENT_TARGET": target}
        env |= {"ASR_TIMEOUT_S": "1200", "BENTOML_HOME": str(home)}
        with Server(env, home / f"server-{target}.log") as server:
            for seed, (texts, spans, mixes) in enumerate(files):
                for audio, mix in mixes.items():
                    out = results[audio][seed]
                    if target == targets[0]:  # every clip is shorter than a segment: never cut, whatever the target
                        clips = [encode(c, RATE) for c in sentence_clips(mix, spans)]
                        out["sentences"] = [
                            str(b["text"]) for b in asyncio.run(transcribe_each(server.url, clips, 4, 1200))
                        ]
                    (body,) = asyncio.run(transcribe_each(server.url, [encode(mix, RATE)], 1, 1200))
                    out[target] = {
                        "text": str(body["text"]),
                        "cuts": cuts_inside(body, spans, mix.shape[0] / RATE),
                        "lengths": segment_lengths(body),
                    }
                    print(seed, audio, target, f"{wer([' '.join(texts)], [out[target]['text']]):.2%}", file=sys.stderr)
    if tuple(targets) == TARGETS and not args.variants:
        write(summarise(results, [texts for texts, _, _ in files]), training, files)


def summarise(results: dict[str, list[dict[str, Any]]], texts: list[list[str]]) -> dict[str, dict[str, Any]]:
    """Per audio: WER per sentence and per target over all files together (corpus WER), per file, and the
    segments' facts summed over the files."""
    summary: dict[str, dict[str, Any]] = {}
    for audio, per_file in results.items():
        row: dict[str, Any] = {
            "sentences": wer([t for ts in texts for t in ts], [h for r in per_file for h in r["sentences"]]),
            "per_file": [
                (wer(ts, r["sentences"]), wer([" ".join(ts)], [r["model"]["text"]]))
                for ts, r in zip(texts, per_file, strict=True)
            ],
        }
        for target in TARGETS:
            lengths = [x for r in per_file for x in r[target]["lengths"]]
            row[target] = {
                "wer": wer([" ".join(ts) for ts in texts], [r[target]["text"] for r in per_file]),
                "segments": len(lengths),
                "median_s": float(np.median(lengths)),
                "longest_s": max(lengths),
                "cuts": tuple(sum(r[target]["cuts"][i] for r in per_file) for i in (0, 1)),
            }
        summary[audio] = row
    return summary


def write(summary: dict[str, dict[str, Any]], training: dict[str, Any], files: list[Any]) -> None:
    longest = (
        f"median {training.get('median_s')} s, longest {training['max_s']:g} s ({training['source']})"
        if training
        else "not recorded"
    )
    minutes = [mixes["clean"].shape[0] / RATE / 60 for _, _, mixes in files]
    lines = [
        f"# Long recordings against their sentences ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/long_audio.py`: {len(files)} files of {min(minutes):.1f}-{max(minutes):.1f} minutes, "
        f"{sum(len(t) for t, _, _ in files)} sentences in all, drawn from the held-out sentences the demo model "
        f"never saw in training or tuning (file 0 takes them in order, the others shuffled), each at its own speed "
        f"and pitch, {GAP_S:g} s apart, clean and mixed with each noise at each SNR; the demo model through "
        f"`bentoml serve` with the VAD segmenter; {cpu_name()}, {os.cpu_count()} cores. The model's training "
        f"utterances (its manifest): {longest}. Per sentence: each sentence's stretch of the same audio (from the "
        "middle of the pause before it to the middle of the pause after it) sent alone. Long, model: "
        "ASR_SEGMENT_TARGET=model (speech regions share a segment while it stays within the median training "
        "utterance; a region longer than twice that is cut at the pauses heard by energy inside it; a segment still "
        "longer than twice that is heard again in pieces cut where the model's words pause, the hearing whose words "
        "the model is surer of kept); long, off: they "
        f"share one up to ASR_SEGMENT_S (30 s), as before. WER over all files together. Goal: long-file WER at most "
        f"per-sentence WER + {GOAL_POINTS:g} point. Cuts: a segment's start or end, and how many of them fall inside "
        "a sentence's spoken span.",
        "",
        "| audio | WER per sentence | WER long, model | over per sentence | goal | WER long, off | over per sentence "
        "| segments model / off | median / longest segment, model (s) | cuts in a sentence, model |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for audio, r in summary.items():
        m, o, ref = r["model"], r["off"], r["sentences"]
        met = "met" if m["wer"] - ref <= GOAL_POINTS / 100 + 1e-9 else "missed"
        lines.append(
            f"| {audio} | {ref:.1%} | {m['wer']:.1%} | {(m['wer'] - ref) * 100:+.2f} pt | {met} | {o['wer']:.1%} "
            f"| {(o['wer'] - ref) * 100:+.1f} pt | {m['segments']} / {o['segments']} "
            f"| {m['median_s']:.1f} / {m['longest_s']:.1f} | {m['cuts'][1]} of {m['cuts'][0]} |"
        )
    lines += [
        "",
        "Each file alone (ASR_SEGMENT_TARGET=model): how far one 10-minute file decides the goal.",
        "",
        "| audio | file | WER per sentence | WER long, model | over per sentence |",
        "|---|---|---|---|---|",
    ]
    for audio, r in summary.items():
        for i, (ref, long) in enumerate(r["per_file"]):
            lines.append(f"| {audio} | {i} | {ref:.1%} | {long:.1%} | {(long - ref) * 100:+.1f} pt |")
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(RESULTS.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
