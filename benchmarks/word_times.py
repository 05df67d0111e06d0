"""How far a word's end runs past its last token's frames (service/recognition/transcript.py, END_PAD_FRAMES),
chosen on the demo model's dev sentences (heldout[:48], what demo/train.py scored; the tests use heldout[48:]):
each dev sentence spoken word by word with known gaps, recognised greedily, its words timed with 0 to 3 frames
of end pad; the share of words with both edges within 0.12 s of the truth, and the median edge errors.

    python benchmarks/word_times.py [--out benchmarks/results/word_times.md]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # demo/ is not an installed package
TOLERANCE_S = 0.12
CHECKPOINT = ROOT / "demo" / "stt_hi_demo_conformer_ctc.nemo"


def exported(work: Path) -> Path:
    from export.__main__ import quiet_nemo
    from export.pipeline import Options, run
    from export.sources import from_nemo

    quiet_nemo()
    _, _, directory = run(from_nemo(CHECKPOINT, None), Options(workdir=work, register=False, streaming=False))
    return Path(directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/word_times.md"))
    args = parser.parse_args()
    from benchmarks.report import publish
    from demo.metrics import align_words
    from demo.speech import spoken_words
    from demo.text import read_heldout
    from service.audio.segment import Segment
    from service.manifest import Manifest
    from service.recognition import transcript
    from service.recognition.beam import BeamDecoder
    from service.recognition.recognizer import Recognizer
    from service.recognition.tokens import Detokenizer

    directory = exported(Path(tempfile.mkdtemp(prefix="word-times-")))
    manifest = Manifest.read(directory)
    engine = Recognizer(directory, manifest, "cpu")
    detok = Detokenizer(manifest.vocabulary, manifest.tokenizer)
    rng = random.Random(13)
    files = []
    for sentence in read_heldout()[:48]:
        words = sentence.split()
        audio, spans = spoken_words(words, [rng.uniform(0.05, 0.6) for _ in words[1:]], lead_s=0.4)
        files.append((audio, spans, engine.infer([audio])[0]))
    beam = BeamDecoder(manifest.vocabulary, manifest.blank_id, None, manifest.tokenizer.unknown_ids)
    width = manifest.decoder.beam_width
    beams = [beam.decode(engine.forward([audio])[0], width) for audio, _, _ in files]
    transcript_pad = transcript.END_PAD_FRAMES
    rows = []
    for decoding, pad in [("greedy", p) for p in range(4)] + [("beam", p) for p in range(4)]:
        transcript.END_PAD_FRAMES = pad
        within = total = 0
        starts, ends = [], []
        for (audio, spans, greedy_result), beam_result in zip(files, beams, strict=True):
            result = greedy_result if decoding == "greedy" else beam_result
            rate = manifest.sample_rate
            duration = audio.shape[0] / rate
            assembled = transcript.assemble(
                [Segment(0, audio)], [result], detok, manifest.frame_shift_s, rate, duration, audio.shape[0], None
            )
            got = assembled.words
            for i, j in align_words([s.word for s in spans], [w.word for w in got]):
                a, b = abs(got[j].start - spans[i].start), abs(got[j].end - spans[i].end)
                starts.append(a)
                ends.append(b)
                within += a <= TOLERANCE_S and b <= TOLERANCE_S
            total += len(spans)
        rows.append((decoding, pad, within, total, float(np.median(starts)), float(np.median(ends))))
    best = max((r for r in rows if r[0] == "greedy"), key=lambda r: r[2])
    lines = [
        "# Word end pad, chosen on the demo model's dev sentences",
        "",
        f"`python benchmarks/word_times.py`: heldout[:48] ({rows[0][3]} words) spoken word by word with 0.05-0.6 s "
        f"gaps; a word's end = its last token's frames + the pad (40-ms frames); greedy, and beam search (width "
        f"{width}, no LM), whose words are timed from its own frames.",
        "",
        f"| decoding | end pad, frames | both edges within {TOLERANCE_S} s | median start error, ms | "
        "median end error, ms |",
        "|---|---|---|---|---|",
    ]
    for decoding, pad, within, total, start, end in rows:
        lines.append(
            f"| {decoding} | {pad} | {within}/{total} ({within / total:.1%}) | {start * 1000:.0f} | {end * 1000:.0f} |"
        )
    lines += ["", f"Best for greedy: {best[1]} frame(s) (the service uses {transcript_pad})."]
    return publish(args.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
