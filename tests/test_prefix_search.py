"""Our CTC prefix beam search (service/recognition/prefix_search.py) against pyctcdecode 0.5, the decoder it
replaces (installed beside the suite as a reference only, `--no-deps`: it pins NumPy below 2): the same best
text and word frames on a table of cases — character and SentencePiece vocabularies, widths 1 to 32, peaked and
flat frames, with and without hotwords (positive and negative), with and without an n-gram LM; decoded through
the service's own labels (BeamDecoder)."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from export.lm import build_arpa
from service.recognition.beam import JOINER, MIN_PROB, PRUNE_LOGP, TOKEN_MIN_LOGP, BeamDecoder, Hotword, LMSpec
from service.recognition.prefix_search import Hotwords, Prefixes

pyctcdecode = pytest.importorskip("pyctcdecode", reason="the reference decoder (scripts/setup.sh installs it)")
kenlm = pytest.importorskip("kenlm")

CHARS = [" ", "क", "ख", "ग", "ा", "ि", "र", "म", "न", "स"]
PIECES = ["\u2581", "\u2581क", "\u2581म", "र", "ा", "ि", "\u2581स", "न", "\u2581नम", "स्ते", "<unk>"]
WORDS = ["कर", "कमा", "मन", "सर", "नमस्ते", "मिस", "गा", "खर"]


def reference(
    vocabulary: Sequence[str],
    unknown: Sequence[int],
    lm: LMSpec | None,
    logprobs: Any,
    width: int,
    hotwords: Sequence[Hotword],
) -> tuple[str, list[Any]]:
    """pyctcdecode's best beam for the same labels the service gives (BeamDecoder's _label), with a scorer per
    hotword weight, as the service used it until it had its own search."""
    import re

    from pyctcdecode.alphabet import Alphabet
    from pyctcdecode.decoder import BeamSearchDecoderCTC
    from pyctcdecode.language_model import HotwordScorer, LanguageModel, load_unigram_set_from_arpa

    from service.manifest import is_arpa
    from service.recognition.beam import _label

    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
    labels = [_label(piece, unknown=i in unknown) for i, piece in enumerate(vocabulary)]
    labels.insert(len(vocabulary), "")
    language_model = None
    if lm is not None:

        class Joined(LanguageModel):  # type: ignore[misc]
            def score_partial_token(self, partial_token: str) -> float:
                return float(super().score_partial_token(partial_token.replace(JOINER, "")))

            def score(self, prev_state: Any, word: str, is_last_word: bool = False) -> Any:
                return super().score(prev_state, word.replace(JOINER, ""), is_last_word)

        unigrams = load_unigram_set_from_arpa(lm.path) if is_arpa(lm.path) else None
        language_model = Joined(kenlm.Model(lm.path), unigrams, alpha=lm.alpha, beta=lm.beta)
    decoder = BeamSearchDecoderCTC(Alphabet.build_alphabet(labels), language_model)
    by_weight: dict[float, list[str]] = {}
    for h in hotwords:
        by_weight.setdefault(h.weight, []).append(h.phrase)
    parts = [HotwordScorer.build_scorer(phrases, weight=w) for w, phrases in by_weight.items()]

    class Weighted(HotwordScorer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(re.compile(r"^\b$"), None, 0.0)

        def __contains__(self, item: str) -> bool:
            return any(item.replace(JOINER, "") in p for p in parts)

        def score(self, text: str) -> float:
            return float(sum(p.score(text.replace(JOINER, "")) for p in parts))

        def score_partial_token(self, token: str) -> float:
            token = token.replace(JOINER, "")
            scores = [p.score_partial_token(token) for p in parts if token in p]
            return max(scores, key=abs) if scores else 0.0

    clipped = np.clip(logprobs.astype(np.float32), math.log(MIN_PROB), 0.0)
    beams = decoder._decode_logits(clipped, width, PRUNE_LOGP, TOKEN_MIN_LOGP, False, Weighted())
    text, _, word_frames, _, _ = beams[0]
    words = [(w.replace(JOINER, ""), tuple(int(x) for x in f)) for w, f in word_frames if w.replace(JOINER, "")]
    return " ".join(text.replace(JOINER, "").split()), words


def frames(vocab_size: int, n: int, seed: int, temperature: float) -> Any:
    """Log-softmax of random scores: low temperature gives peaked (speech-like) frames, high flat ones."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, vocab_size + 1)) / temperature
    scores[:, -1] += rng.uniform(0, 3, size=n) / temperature  # the blank wins often, as in CTC output
    scores -= scores.max(axis=1, keepdims=True)
    return (scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))).astype(np.float32)


@pytest.fixture(scope="module")
def lms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("lms")
    rng = np.random.default_rng(7)
    sentences = [[WORDS[i] for i in rng.integers(0, len(WORDS), size=rng.integers(2, 6))] for _ in range(200)]
    arpa = folder / "lm.arpa"
    arpa.write_text(build_arpa(sentences, 3), encoding="utf-8")
    return {"arpa": str(arpa)}


HOTWORDS = {
    "none": (),
    "one": (Hotword("कर", 10.0),),
    "weights": (Hotword("मन", 5.0), Hotword("नमस्ते सर", 15.0), Hotword("खर", -20.0)),
}
CASES = list(
    itertools.product(
        ["chars", "pieces"],  # vocabulary
        [1, 4, 32],  # width
        [0.3, 1.5],  # temperature
        ["none", "one", "weights"],  # hotwords
        [None, "arpa"],  # LM
        [0, 1],  # seed
    )
)


@pytest.mark.parametrize(("vocab", "width", "temperature", "hot", "lm", "seed"), CASES)
def test_the_same_best_beam_as_pyctcdecode(
    vocab: str, width: int, temperature: float, hot: str, lm: str | None, seed: int, lms: dict[str, str]
) -> None:
    vocabulary = CHARS if vocab == "chars" else PIECES
    unknown = [len(PIECES) - 1] if vocab == "pieces" else []
    spec = LMSpec(lms[lm], 0.7, 1.5) if lm else None
    logprobs = frames(len(vocabulary), 60, seed * 1000 + width, temperature)
    ours = BeamDecoder(vocabulary, len(vocabulary), spec, unknown).decode(logprobs, width, HOTWORDS[hot])
    text, words = reference(vocabulary, unknown, spec, logprobs, width, HOTWORDS[hot])
    assert ours.text == text
    assert [(w.word, (w.first_frame, w.end_frame)) for w in ours.words] == words


def test_hotword_shares_and_prefixes() -> None:
    """A partial word gets weight x its length / the first hotword it starts (the trie's depth-first order,
    words inserted shortest first); whole hotword words count once each in a text."""
    hot = Hotwords([("नमस्ते सर", 12.0), ("नम", 6.0)])
    assert "न" in hot and "नमस" in hot and "x" not in hot and "" in hot
    assert hot.score("नमस्ते सर नम नमक") == 12.0 * 2 + 6.0
    assert hot.score_partial("न") == max(12.0 * 1 / len("नमस्ते"), 6.0 * 1 / len("नम"), key=abs)
    trie = Prefixes(["ab", "abcd", "b"])
    assert trie.first_word("a") == "ab" and trie.first_word("abc") == "abcd" and not trie.has("c")
    assert trie.has("") and not Prefixes([]).has("")


def test_a_lone_blank_frame_and_no_frames(lms: dict[str, str]) -> None:
    decoder = BeamDecoder(CHARS, len(CHARS))
    blank = np.full((3, len(CHARS) + 1), -30.0, np.float32)
    blank[:, -1] = 0.0
    assert decoder.decode(blank, 4).text == ""
    assert decoder.decode(np.zeros((0, len(CHARS) + 1), np.float32), 4).text == ""
