"""Our CTC prefix beam search (service/recognition/prefix_search.py) against pyctcdecode 0.5 on the same
log-probabilities: time per second of audio, each decoder built once, best of several passes, interleaved.

    python benchmarks/beam_decoder.py [--out benchmarks/results/beam_decoder.md]

Needs pyctcdecode (scripts/setup.sh installs it beside the suite as the tests' reference) and KenLM.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FRAME_S = 0.04  # 4x subsampling of 10-ms features
SECONDS = 30
CHARS = [" ", "क", "ख", "ग", "ा", "ि", "र", "म", "न", "स", "त", "े", "ं", "ो", "ु", "ह", "ल", "व", "य", "द"]
PIECES = [
    "\u2581",
    "\u2581क",
    "\u2581म",
    "र",
    "ा",
    "ि",
    "\u2581स",
    "न",
    "\u2581नम",
    "स्ते",
    "\u2581ह",
    "ै",
    "\u2581के",
    "ल",
]
WORDS = ["कर", "कमा", "मन", "सर", "नमस्ते", "मिस", "है", "के", "हल", "मेल", "रस", "नर"]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package


def logprobs(vocab: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(int(SECONDS / FRAME_S), vocab + 1)) / 0.4
    scores[:, -1] += rng.uniform(0, 3, size=scores.shape[0]) / 0.4
    scores -= scores.max(axis=1, keepdims=True)
    return (scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))).astype(np.float32)


def pyctcdecode_decoder(labels: list[str], lm: Any, hotwords: list[tuple[str, float]]) -> Any:
    """pyctcdecode as the service ran it until it had its own search: a scorer per hotword weight."""
    from pyctcdecode.alphabet import Alphabet
    from pyctcdecode.decoder import BeamSearchDecoderCTC
    from pyctcdecode.language_model import HotwordScorer

    decoder = BeamSearchDecoderCTC(Alphabet.build_alphabet(labels), lm)
    parts = [HotwordScorer.build_scorer([p], weight=w) for p, w in hotwords]

    class Weighted(HotwordScorer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(re.compile(r"^\b$"), None, 0.0)

        def __contains__(self, item: str) -> bool:
            return any(item in p for p in parts)

        def score(self, text: str) -> float:
            return float(sum(p.score(text) for p in parts))

        def score_partial_token(self, token: str) -> float:
            scores = [p.score_partial_token(token) for p in parts if token in p]
            return max(scores, key=abs) if scores else 0.0

    scorer = Weighted()
    return lambda lp, width: decoder._decode_logits(lp, width, -10.0, -5.0, False, scorer)[0][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/beam_decoder.md"))
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    import logging

    import kenlm
    from pyctcdecode.language_model import LanguageModel, load_unigram_set_from_arpa

    from benchmarks.report import publish
    from export.lm import build_arpa
    from export.variants import cpu_name
    from service.recognition.prefix_search import Hotwords, PrefixSearch, WordLM, arpa_unigrams

    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
    rng = np.random.default_rng(7)
    sentences = [[WORDS[i] for i in rng.integers(0, len(WORDS), size=rng.integers(2, 8))] for _ in range(500)]
    arpa = Path(tempfile.mkdtemp()) / "lm.arpa"
    arpa.write_text(build_arpa(sentences, 3), encoding="utf-8")
    hotwords = [("नमस्ते", 10.0), ("मन", 5.0), ("हल", -10.0)]
    rows = []
    for vocab_name, vocab in (("characters", CHARS), ("SentencePiece", PIECES)):
        labels = [*vocab, ""]
        for width, with_lm in ((16, False), (16, True), (64, True)):
            ours_lm = WordLM(kenlm.Model(str(arpa)), arpa_unigrams(str(arpa)), 0.5, 1.0) if with_lm else None
            ours = PrefixSearch(labels, ours_lm)
            ours_hot = Hotwords(hotwords)
            ref_lm = (
                LanguageModel(kenlm.Model(str(arpa)), load_unigram_set_from_arpa(str(arpa)), alpha=0.5, beta=1.0)
                if with_lm
                else None
            )
            reference = pyctcdecode_decoder(labels, ref_lm, hotwords)
            lp = np.clip(logprobs(len(vocab), width), math.log(1e-15), 0.0)
            best = {"ours": math.inf, "pyctcdecode": math.inf}
            same = True
            for _ in range(args.passes):
                started = time.perf_counter()
                text = ours.search(lp, width, ours_hot)[0]
                best["ours"] = min(best["ours"], time.perf_counter() - started)
                started = time.perf_counter()
                same &= reference(lp, width) == text
                best["pyctcdecode"] = min(best["pyctcdecode"], time.perf_counter() - started)
            rows.append((vocab_name, width, "3-gram" if with_lm else "none", best, same))
    lines = [
        "# Beam search: our prefix search against pyctcdecode 0.5",
        "",
        f"`python benchmarks/beam_decoder.py`; {SECONDS} s of peaked random frames (40-ms steps), hotwords on, best of "
        f"{args.passes} interleaved passes; {cpu_name()}, one thread.",
        "",
        "| vocabulary | width | LM | ours, ms per s of audio | pyctcdecode, ms per s | ours / theirs | same text |",
        "|---|---|---|---|---|---|---|",
    ]
    for vocab_name, width, lm_name, best, same in rows:
        ours_ms, ref_ms = best["ours"] * 1000 / SECONDS, best["pyctcdecode"] * 1000 / SECONDS
        lines.append(
            f"| {vocab_name} | {width} | {lm_name} | {ours_ms:.2f} | {ref_ms:.2f} | {ours_ms / ref_ms:.2f} | "
            f"{'yes' if same else 'no'} |"
        )
    return publish(args.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
