"""Cutting long, noisy audio: Silero VAD against energy, with the demo model, and the VAD's cost.

    python benchmarks/vad.py [--minutes 10] [--medium]

Builds a long file from the held-out sentences (demo/heldout.txt, the plain voice, trimmed), 0.3-1.2 s pauses
between them and a 5-8 s pause after every 15th, then mixes it with pink noise, music-like tones and babble
(other held-out sentences) at 20, 10 and 5 dB SNR. For each mix it sends, to the demo model served by `bentoml
serve` on 127.0.0.1:
- every sentence alone (its stretch of the mix from the middle of the pause before it to the middle of the
  pause after it): the per-sentence WER, the reference;
- the whole file, to one server cutting with the VAD (ASR_SEGMENTER=vad) and one cutting by energy.
WER is corpus WER against the sentences joined. A cut is a segment's start or end (other than the file's
own); it is inside a sentence when it falls more than 10 ms within a sentence's spoken span. The VAD's time
is measured in this process (one thread, as the service runs it) on each mix; with --medium, against the bare
recognition time of the `medium` architecture (random weights, exported here) over the same mix's VAD
segments, batch 1 as the service runs them on the CPU. Writes benchmarks/results/vad.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import transcribe_each  # noqa: E402
from demo import augment as aug  # noqa: E402
from demo.metrics import wer  # noqa: E402
from demo.speech import speak, trim  # noqa: E402
from demo.text import read_heldout  # noqa: E402
from export.variants import cpu_name  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402

RATE = 16000
NOISES = ("pink", "tones", "babble")
SNRS = (20.0, 10.0, 5.0)
RESULTS = ROOT / "benchmarks" / "results" / "vad.md"
Audio = npt.NDArray[np.float32]


def join_sentences(
    texts: list[str], say: Callable[[str], Audio], pause_s: Callable[[int], float], minutes: float
) -> tuple[Audio, list[str], list[tuple[int, int]]]:
    """Sentences spoken by `say`, each followed by `pause_s(i)` seconds of silence (0.5 s before the first), until
    the file is `minutes` long: the audio, the sentences in it and their spoken spans (samples)."""
    parts: list[Audio] = [np.zeros(int(0.5 * RATE), np.float32)]
    spans, said, t = [], [], parts[0].shape[0]
    for i, text in enumerate(texts):
        spoken = say(text)
        pause = np.zeros(int(pause_s(i) * RATE), np.float32)
        spans.append((t, t + spoken.shape[0]))
        said.append(text)
        parts += [spoken, pause]
        t += spoken.shape[0] + pause.shape[0]
        if t >= minutes * 60 * RATE:
            break
    return np.concatenate(parts), said, spans


def long_file(minutes: float, seed: int = 0) -> tuple[Audio, list[str], list[tuple[int, int]], list[Audio]]:
    """The clean long file, its sentences, their spoken spans (samples) and voices for babble (sentences not
    in the file)."""
    sentences = read_heldout()
    rng = np.random.default_rng(seed)

    def pause_s(i: int) -> float:
        return float(rng.uniform(5.0, 8.0) if (i + 1) % 15 == 0 else rng.uniform(0.3, 1.2))

    audio, texts, spans = join_sentences(sentences[:-10], lambda text: trim(speak(text)), pause_s, minutes)
    return audio, texts, spans, [speak(s) for s in sentences[-10:]]


def sentence_clips(mix: Audio, spans: list[tuple[int, int]]) -> list[Audio]:
    """Each sentence with half of the pause on either side of it."""
    edges = [0] + [(spans[i][1] + spans[i + 1][0]) // 2 for i in range(len(spans) - 1)] + [mix.shape[0]]
    return [mix[edges[i] : edges[i + 1]] for i in range(len(spans))]


def cuts_inside(body: dict[str, object], spans: list[tuple[int, int]], total_s: float) -> tuple[int, int]:
    """(cuts, cuts inside a sentence's spoken span)."""
    segments = body["segments"]
    assert isinstance(segments, list)
    edges = {round(float(e), 3) for s in segments for e in (s["start"], s["end"])} - {0.0, round(total_s, 3)}
    inside = sum(any(a / RATE + 0.01 < e < b / RATE - 0.01 for a, b in spans) for e in edges)
    return len(edges), inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--medium", action="store_true", help="also time the medium architecture (exports it)")
    parser.add_argument("--medium-dir", type=Path, help="an exported medium model's directory (skips its export)")
    args = parser.parse_args()
    home = Path(os.environ.get("BENTOML_HOME") or tempfile.mkdtemp(prefix="asr-vad-"))
    os.environ["BENTOML_HOME"] = str(home)
    tag = os.environ.get("ASR_MODEL", "")
    if not tag:
        checkpoint = ROOT / "demo" / "stt_hi_demo_conformer_ctc.nemo"
        name = "stt_hi_demo_conformer_ctc"
        subprocess.run(
            [sys.executable, "-m", "export", "--nemo", str(checkpoint), "--name", name], cwd=ROOT, check=True
        )
        tag = f"{name}:latest"
    from service.audio.vad import SileroVAD

    clean, texts, spans, voices = long_file(args.minutes)
    total_s = clean.shape[0] / RATE
    speech_s = sum(b - a for a, b in spans) / RATE
    print(f"{total_s / 60:.1f} min, {len(texts)} sentences, {speech_s / 60:.1f} min spoken", file=sys.stderr)
    rng = np.random.default_rng(1)
    mixes = {
        (kind, snr): aug.add_noise(clean, aug.noise(kind, clean.shape[0], rng, voices), snr)
        for kind in NOISES
        for snr in SNRS
    }
    vad = SileroVAD()
    vad_s = {}
    for key, mix in mixes.items():
        started = time.perf_counter()
        vad.probabilities(mix)
        vad_s[key] = time.perf_counter() - started
    results: dict[tuple[str, float], dict[str, object]] = {key: {} for key in mixes}
    for segmenter in ("vad", "energy"):
        env = {"ASR_MODEL": tag, "ASR_DEVICE": "cpu", "ASR_SEGMENTER": segmenter, "ASR_TIMEOUT_S": "1200"}
        with Server(env, home / f"server-{segmenter}.log") as server:
            for key, mix in mixes.items():
                if segmenter == "vad":  # the per-sentence reference: every clip is shorter than a segment
                    clips = [encode(c, RATE) for c in sentence_clips(mix, spans)]
                    hyps = [str(b["text"]) for b in asyncio.run(transcribe_each(server.url, clips, 4, 1200))]
                    results[key]["sentences"] = wer(texts, hyps)
                started = time.monotonic()
                (body,) = asyncio.run(transcribe_each(server.url, [encode(mix, RATE)], 1, 1200))
                wall = time.monotonic() - started
                segments = body["segments"]
                assert isinstance(segments, list)
                results[key][segmenter] = {
                    "wer": wer([" ".join(texts)], [str(body["text"])]),
                    "cuts": cuts_inside(body, spans, total_s),
                    "segments": len(segments),
                    "sent_s": sum(float(s["end"]) - float(s["start"]) for s in segments),
                    "speech_s": body.get("speech_s"),
                    "wall": wall,
                }
                print(key, segmenter, results[key][segmenter], file=sys.stderr)
    medium = time_medium(mixes[("pink", 10.0)], vad, args.medium_dir) if args.medium else None
    write(results, vad_s, medium, total_s, speech_s, len(texts))


def time_medium(mix: Audio, vad: object, model_dir: Path | None) -> tuple[float, float, int]:
    """(VAD seconds, bare medium recognition seconds, segments) for one mix, best of 3 each."""
    from service.audio.segment import cut_by_speech
    from service.audio.vad import SileroVAD
    from service.manifest import Manifest
    from service.recognition.recognizer import Recognizer

    assert isinstance(vad, SileroVAD)
    if model_dir is None:
        home = Path(tempfile.mkdtemp(prefix="asr-vad-medium-"))
        env = {**os.environ, "BENTOML_HOME": str(home)}
        subprocess.run([sys.executable, "-m", "export", "--config", "medium"], cwd=ROOT, check=True, env=env)
        model_dir = next((home / "models").glob("*/*/model.onnx")).parent
    engine = Recognizer(model_dir, Manifest.read(model_dir), device="cpu")
    segments, _ = cut_by_speech(mix, RATE, 30 * RATE, 0.25, vad)
    vad_times, rec_times = [], []
    for _ in range(3):
        started = time.perf_counter()
        cut_by_speech(mix, RATE, 30 * RATE, 0.25, vad)
        vad_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        for segment in segments:
            engine.infer([segment.samples])
        rec_times.append(time.perf_counter() - started)
    return min(vad_times), min(rec_times), len(segments)


def write(
    results: dict[tuple[str, float], dict[str, object]],
    vad_s: dict[tuple[str, float], float],
    medium: tuple[float, float, int] | None,
    total_s: float,
    speech_s: float,
    sentences: int,
) -> None:
    rows = []
    for (kind, snr), r in results.items():
        v, e = r["vad"], r["energy"]
        assert isinstance(v, dict) and isinstance(e, dict)
        rows.append(
            f"| {kind} | {snr:g} dB | {r['sentences']:.1%} | {v['wer']:.1%} | {e['wer']:.1%} "
            f"| {v['cuts'][1]} of {v['cuts'][0]} | {e['cuts'][1]} of {e['cuts'][0]} "
            f"| {v['segments']} / {e['segments']} | {v['sent_s'] / 60:.1f} | {v['speech_s'] / 60:.1f} "
            f"| {vad_s[(kind, snr)]:.2f} |"
        )
    lines = [
        f"# Cutting long audio: Silero VAD against energy ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/vad.py`: one {total_s / 60:.1f}-minute file of {sentences} held-out sentences "
        f"({speech_s / 60:.1f} minutes spoken; 0.3-1.2 s pauses, 5-8 s after every 15th) mixed with each noise "
        f"at each SNR; the demo model through `bentoml serve`; {cpu_name()}, {os.cpu_count()} cores. Per "
        "sentence: each sentence's stretch of the same mix sent alone. Cuts: a segment's start or end, and how "
        "many of them fall inside a sentence. Sent: minutes of audio the VAD's segments hold; speech: what it "
        "called speech (`speech_s`). VAD s: its time for the whole file, one thread.",
        "",
        "| noise | SNR | WER per sentence | WER long, VAD | WER long, energy | cuts in a sentence, VAD "
        "| cuts in a sentence, energy | segments VAD / energy | sent (min) | speech (min) | VAD s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    if medium is not None:
        vad_time, rec_time, count = medium
        lines += [
            "",
            f"Cost, `medium` architecture (random weights), pink noise at 10 dB: VAD and cutting {vad_time:.2f} s, "
            f"recognition of its {count} segments (bare ONNX Runtime, batch 1) {rec_time:.1f} s: the VAD is "
            f"{vad_time / rec_time:.1%} of recognition time (best of 3 each).",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
