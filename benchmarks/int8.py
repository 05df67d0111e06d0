"""The int8 variant (MatMul-only dynamic quantisation) against the fp32 graph, on this CPU:

    python benchmarks/int8.py [--sentences 300]

- the `medium` architecture (seeded random weights: the real compute): speed over 16 Hindi clips of 5-15 s
  (interleaved passes, median ratio) and clips whose greedy tokens equal the fp32 graph's;
- the demo model (demo/, a model that hears): the same, and CER/WER on the held-out sentences under the model
  card's conditions for both graphs.

Both models are exported with `--variants int8` into a temporary store (the manifest then carries the export's
own parity and speed figures, printed too). Writes benchmarks/results/int8.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="asr-int8-"))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.throughput import clips16  # noqa: E402
from demo.evaluate import evaluate  # noqa: E402
from demo.text import read_heldout  # noqa: E402
from export.variants import cpu_name, interleaved_speed  # noqa: E402
from service.manifest import Manifest  # noqa: E402
from service.recognition.ctc import greedy_decode  # noqa: E402
from service.recognition.tokens import Detokenizer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "int8.md"
Audio = np.ndarray


def export(*source: str) -> Path:
    """Export with the int8 variant; the store entry's directory."""
    import bentoml

    subprocess.run([sys.executable, "-m", "export", *source, "--variants", "int8"], cwd=ROOT, check=True)
    return Path(max(bentoml.models.list(), key=lambda m: m.info.creation_time).path)


class Graph:
    def __init__(self, directory: Path, file: str, manifest: Manifest) -> None:
        self.session = ort.InferenceSession(str(directory / file), providers=["CPUExecutionProvider"])
        self.manifest, self.detok = manifest, Detokenizer(manifest.vocabulary, manifest.tokenizer)

    def tokens(self, audio: Audio) -> list[int]:
        logprobs, lengths = self.session.run(
            None, {"audio": audio[None, :].astype(np.float32), "audio_lengths": np.array([audio.shape[0]], np.int64)}
        )
        return [int(t) for t in greedy_decode(logprobs[0], int(lengths[0]), self.manifest.blank_id).token_ids]

    def texts(self, audios: list[Audio]) -> list[str]:
        return [self.detok.text(self.tokens(a)) for a in audios]


def compare(directory: Path, clips: list[Audio], rounds: int = 5) -> dict[str, float]:
    manifest = Manifest.read(directory)
    fp32, int8 = (
        Graph(directory, manifest.graph.file, manifest),
        Graph(directory, manifest.variants["int8"].file, manifest),
    )
    same = sum(fp32.tokens(c) == int8.tokens(c) for c in clips)
    speed = interleaved_speed(lambda: [fp32.tokens(c) for c in clips], lambda: [int8.tokens(c) for c in clips], rounds)
    seconds = sum(c.shape[0] for c in clips) / manifest.sample_rate
    variant = manifest.variants["int8"]
    return {
        "clips": len(clips),
        "audio_s": round(seconds, 1),
        "identical_tokens_vs_fp32": same,
        "speed_vs_fp32": speed,
        "export_speed_vs_fp32": variant.cpu_speed_vs_fp32 or 0.0,
        "export_identical_tokens_vs_nemo": variant.parity.identical_tokens,
        "export_clips": variant.parity.clips,
        "size_mb_fp32": round((directory / manifest.graph.file).stat().st_size / 1e6, 1),
        "size_mb_int8": round((directory / variant.file).stat().st_size / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=300)
    args = parser.parse_args()
    machine = f"{cpu_name()}, {os.cpu_count()} cores"
    print(machine, flush=True)

    medium = compare(export("--config", "medium"), clips16())
    print("medium:", json.dumps(medium), flush=True)

    demo_dir = export("--nemo", str(ROOT / "demo" / "stt_hi_demo_conformer_ctc.nemo"))
    sentences = read_heldout()[: args.sentences]
    from demo.speech import speak

    demo = compare(demo_dir, [speak(s) for s in sentences[:40]])
    print("demo:", json.dumps(demo), flush=True)
    manifest = Manifest.read(demo_dir)
    accuracy = {
        name: evaluate(Graph(demo_dir, file, manifest).texts, sentences)
        for name, file in (("fp32", manifest.graph.file), ("int8", manifest.variants["int8"].file))
    }

    lines = [
        f"# int8 against fp32 ({time.strftime('%Y-%m-%d')}, {machine})",
        "",
        "`python benchmarks/int8.py`: MatMul-only dynamic int8 quantisation (`--variants int8`). Speed: "
        "interleaved single runs of every clip, median of 5 rounds (> 1: int8 faster).",
        "",
        "| model | clips (s) | int8 speed vs fp32 | export's figure | tokens = fp32 | export: tokens = NeMo "
        "| size fp32 → int8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in (("medium architecture (random weights)", medium), ("demo model", demo)):
        lines.append(
            f"| {name} | {r['clips']} ({r['audio_s']:.0f} s) | {r['speed_vs_fp32']:.2f}x | "
            f"{r['export_speed_vs_fp32']:.2f}x | {r['identical_tokens_vs_fp32']}/{r['clips']} | "
            f"{r['export_identical_tokens_vs_nemo']}/{r['export_clips']} | "
            f"{r['size_mb_fp32']:.1f} → {r['size_mb_int8']:.1f} MB |"
        )
    lines += [
        "",
        f"Demo model, {len(sentences)} held-out sentences:",
        "",
        "| condition | fp32 CER / WER | int8 CER / WER |",
    ]
    lines.append("|---|---|---|")
    for condition, fp in accuracy["fp32"].items():
        q = accuracy["int8"][condition]
        lines.append(f"| {condition} | {fp['cer']:.1%} / {fp['wer']:.1%} | {q['cer']:.1%} / {q['wer']:.1%} |")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
