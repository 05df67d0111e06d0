"""python -m demo.evaluate [CHECKPOINT]: CER and WER of the demo model on the held-out sentences (demo/heldout.txt:
sentences not in the training text, a share of their words never seen in training) under the conditions of
the model card: the plain voice clean, at 10 and 0 dB SNR, through a telephone band, and in the varied voices
of training. Writes demo/evaluation.json and prints the model card's table.

Noise at each SNR rotates over white, pink, babble (other held-out sentences) and music-like tones, seeded,
so every condition is the same audio on every run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from demo import augment as aug
from demo.metrics import cer, wer
from demo.speech import Voice, speak
from demo.text import read_heldout

HERE = Path(__file__).parent
CHECKPOINT = HERE / "stt_hi_demo_conformer_ctc.nemo"
RESULTS = HERE / "evaluation.json"
NOISES = ("white", "pink", "babble", "tones")

Audio = npt.NDArray[np.float32]


def conditions(sentences: list[str], seed: int = 0) -> dict[str, list[Audio]]:
    """Each condition's audio for every sentence (the plain voice at 150 words a minute, as the tests speak)."""
    clean = [speak(s) for s in sentences]
    rng = np.random.default_rng(seed)
    voices = clean[::-1]

    def noisy(snr: float) -> list[Audio]:
        out = []
        for i, a in enumerate(clean):
            kind = NOISES[i % len(NOISES)]
            out.append(aug.add_noise(a, aug.noise(kind, a.size, rng, voices[i : i + 7] or voices), snr))
        return out

    picker = random.Random(seed)
    from demo.speech import VARIANTS

    varied = [
        speak(s, Voice(picker.choice(VARIANTS), picker.randint(115, 230), picker.randint(15, 85))) for s in sentences
    ]
    return {
        "clean": clean,
        "10 dB SNR": noisy(10.0),
        "0 dB SNR": noisy(0.0),
        "telephone band": [aug.telephone(a, rng) for a in clean],
        "varied voices": varied,
    }


def evaluate(transcribe: Callable[[list[Audio]], list[str]], sentences: list[str]) -> dict[str, dict[str, float]]:
    results = {}
    for name, audios in conditions(sentences).items():
        started = time.monotonic()
        hyps = transcribe(audios)
        results[name] = {
            "cer": round(cer(sentences, hyps), 4),
            "wer": round(wer(sentences, hyps), 4),
            "sentences": len(sentences),
            "seconds": round(time.monotonic() - started, 1),
        }
        print(f"[evaluate] {name}: CER {results[name]['cer']:.2%} WER {results[name]['wer']:.2%}", file=sys.stderr)
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    rows = ["| condition | CER | WER |", "|---|---|---|"]
    rows += [f"| {name} | {r['cer']:.1%} | {r['wer']:.1%} |" for name, r in results.items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, default=CHECKPOINT)
    parser.add_argument("--sentences", type=int, default=300, help="held-out sentences to score")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from export.__main__ import quiet_nemo

    quiet_nemo()
    import torch
    from nemo.collections.asr.models import ASRModel

    from demo.train import greedy_texts

    torch.set_num_threads(2)
    model = ASRModel.restore_from(str(args.checkpoint), map_location="cpu").eval()
    sentences = read_heldout()[: args.sentences]
    results = evaluate(lambda audios: greedy_texts(model, audios), sentences)
    args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
