"""CTC prefix beam search (pyctcdecode), with an optional KenLM n-gram model and per-request hotwords.

Greedy decoding (service/recognition/ctc.py) is the default and exactly NeMo's. Beam search reads the same
log-probabilities; pyctcdecode keeps the `width` best prefixes per frame, scoring each word with the n-gram
model (alpha x LM log-probability + beta per word) and adding a hotword's weight to any prefix that spells it
(partially spelt hotwords get a share by length, so the beam keeps them alive). Width 1 without LM or
hotwords is the greedy path (tested).

A decoder runs in a separate process (BeamPool): pyctcdecode is pure Python and would hold the entry's GIL
for tens of milliseconds per segment.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.manifest import Manifest, is_arpa

# A beam's prefixes are pruned below best + PRUNE_LOGP; tokens below TOKEN_MIN_LOGP in a frame are not tried
# unless they are its best (pyctcdecode's defaults).
PRUNE_LOGP = -10.0
TOKEN_MIN_LOGP = -5.0
MIN_PROB = 1e-15  # log-probabilities are clipped at log(MIN_PROB), as pyctcdecode's decode_beams does


class HotwordError(ValueError):
    """The `hotwords` text does not parse or exceeds a limit (answered 400)."""


@dataclass(frozen=True)
class Hotword:
    phrase: str  # one or more words, single-spaced
    weight: float


def parse_hotwords(text: str, default_weight: float, max_count: int, max_words: int) -> tuple[Hotword, ...]:
    """`phrase[:weight], phrase[:weight], ...` -> hotwords. Weights are numbers in [-100, 100] (negative ones
    suppress a word); a phrase has at most `max_words` words; at most `max_count` phrases."""
    hotwords: list[Hotword] = []
    for i, item in enumerate(text.split(",")):
        item = item.strip()
        if not item:
            if text.strip():
                raise HotwordError(f"hotword {i + 1} is empty (two commas in a row, or one at an end)")
            continue
        phrase, weight = item, default_weight
        if ":" in item:
            phrase, _, given = item.rpartition(":")
            try:
                weight = float(given)
            except ValueError:
                raise HotwordError(f"hotword {phrase.strip()!r}: weight {given.strip()!r} is not a number") from None
            if not math.isfinite(weight) or abs(weight) > 100:
                raise HotwordError(f"hotword {phrase.strip()!r}: weight {given.strip()} is outside -100..100")
        words = phrase.split()
        if not words:
            raise HotwordError(f"hotword {i + 1} has a weight but no words")
        if len(words) > max_words:
            raise HotwordError(f"hotword {phrase.strip()!r} has {len(words)} words; at most {max_words}")
        hotwords.append(Hotword(" ".join(words), weight))
    if len(hotwords) > max_count:
        raise HotwordError(f"{len(hotwords)} hotwords; at most {max_count} per request")
    return tuple(hotwords)


@dataclass(frozen=True)
class Decoding:
    """How one request's log-probabilities become text."""

    beam: bool = False  # False: greedy (exactly NeMo); beam: ASR_BEAM_WIDTH or the model's own width
    hotwords: tuple[Hotword, ...] = ()


@dataclass(frozen=True)
class LMSpec:
    """A KenLM n-gram model (ARPA or KenLM binary) and its weights."""

    path: str
    alpha: float  # LM weight
    beta: float  # word insertion bonus


@dataclass(frozen=True)
class BeamWord:
    word: str
    first_frame: int
    end_frame: int  # one past the last frame of its last token
    confidence: float


@dataclass(frozen=True)
class BeamText:
    """One segment decoded by beam search."""

    text: str
    words: list[BeamWord]


@functools.lru_cache(maxsize=64)
def _hotword_scorer(hotwords: tuple[Hotword, ...]) -> Any:
    """pyctcdecode's HotwordScorer with a weight per phrase (its own takes one weight for all). Built once per
    list, not once per segment: a long request's segments share their request's hotwords."""
    from pyctcdecode.language_model import HotwordScorer

    by_weight: dict[float, list[str]] = {}
    for h in hotwords:
        by_weight.setdefault(h.weight, []).append(h.phrase)
    parts = [HotwordScorer.build_scorer(phrases, weight=w) for w, phrases in by_weight.items()]

    class Weighted(HotwordScorer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(re.compile(r"^\b$"), None, 0.0)

        def __contains__(self, item: str) -> bool:
            item = item.replace(JOINER, "")
            return any(item in p for p in parts)

        def score(self, text: str) -> float:
            text = text.replace(JOINER, "")
            return float(sum(p.score(text) for p in parts))

        def score_partial_token(self, token: str) -> float:
            token = token.replace(JOINER, "")
            scores = [p.score_partial_token(token) for p in parts if token in p]
            return max(scores, key=abs) if scores else 0.0

    return Weighted()


# pyctcdecode reads a SentencePiece label that ends with the word marker (the lone "▁" piece every
# SentencePiece vocabulary has, its own "▁⁇▁" for <unk>) as "break the next word too", in one flag shared by
# all beams and frames: a later piece of any beam then starts a word it should continue (seen with a random
# BPE model: "लखिल" became "लख िल"). The lone marker is given as marker + JOINER, <unk> as "▁⁇"; the joiner
# (U+2060, never in a transcript) is removed from words before the LM, hotwords and the answer see them.
JOINER = "\u2060"
MARKER = "\u2581"


def _label(piece: str, unknown: bool) -> str:
    if unknown:
        return MARKER + "\u2047"
    if piece == MARKER:
        return MARKER + JOINER
    return piece


class BeamDecoder:
    """One model's decoder: its labels (vocabulary with the blank) and, optionally, its n-gram model."""

    def __init__(
        self, vocabulary: Sequence[str], blank_id: int, lm: LMSpec | None = None, unknown: Sequence[int] = ()
    ) -> None:
        import logging

        logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # its notes on our labels are by design
        from pyctcdecode.alphabet import Alphabet
        from pyctcdecode.decoder import BeamSearchDecoderCTC

        # The one private method used: decode_beams() takes one hotword weight for all; _decode_logits() takes
        # a scorer. Checked here so that another pyctcdecode fails at start-up, not on a request.
        wanted = {"logits", "beam_width", "beam_prune_logp", "token_min_logp", "prune_history", "hotword_scorer"}
        have = set(inspect.signature(BeamSearchDecoderCTC._decode_logits).parameters)
        if not wanted <= have:
            raise RuntimeError(f"pyctcdecode's _decode_logits takes {sorted(have)}; this code needs {sorted(wanted)}")
        labels = [_label(piece, unknown=i in unknown) for i, piece in enumerate(vocabulary)]
        labels.insert(blank_id, "")
        self.blank_id = blank_id
        language_model = None
        if lm is not None:
            import kenlm
            from pyctcdecode.language_model import LanguageModel, load_unigram_set_from_arpa

            class Joined(LanguageModel):  # type: ignore[misc]
                """KenLM sees the words without the joiner (_label)."""

                def score_partial_token(self, partial_token: str) -> float:
                    return float(super().score_partial_token(partial_token.replace(JOINER, "")))

                def score(self, prev_state: Any, word: str, is_last_word: bool = False) -> Any:
                    return super().score(prev_state, word.replace(JOINER, ""), is_last_word)

            unigrams = load_unigram_set_from_arpa(lm.path) if is_arpa(lm.path) else None
            language_model = Joined(kenlm.Model(lm.path), unigrams, alpha=lm.alpha, beta=lm.beta)
        self._decoder = BeamSearchDecoderCTC(Alphabet.build_alphabet(labels), language_model)
        self._surface = [label.replace(MARKER, "").replace(JOINER, "") for label in labels]
        self._silent = [i for i, s in enumerate(self._surface) if not s.strip()]  # the blank and spaces

    def decode(self, logprobs: npt.NDArray[np.float32], width: int, hotwords: Sequence[Hotword] = ()) -> BeamText:
        """The best beam of one segment's [frames, vocab+1] log-probabilities (valid frames only)."""
        clipped = np.clip(logprobs.astype(np.float32), math.log(MIN_PROB), 0.0)
        if clipped.shape[0] == 0:
            return BeamText("", [])
        beams = self._decoder._decode_logits(
            clipped,  # type: ignore[arg-type]  # pyctcdecode's annotation wants an abstract float width
            beam_width=width,
            beam_prune_logp=PRUNE_LOGP,
            token_min_logp=TOKEN_MIN_LOGP,
            prune_history=False,
            hotword_scorer=_hotword_scorer(tuple(hotwords)),
        )
        text, _, word_frames, _, _ = beams[0]
        words = []
        for w, (a, b) in word_frames:
            w = w.replace(JOINER, "")
            if w:
                words.append(BeamWord(w, int(a), int(b), self._confidence(clipped, w, int(a), int(b))))
        return BeamText(" ".join(text.replace(JOINER, "").split()), words)

    def _confidence(self, logprobs: npt.NDArray[np.float32], word: str, first: int, end: int) -> float:
        """Like greedy's (a token's mean probability over its frames), for a word whose tokens the beam does not
        report: over the word's frames where some token beats the blank and the space, the best probability among
        the tokens that spell part of the word. A word the LM or a hotword chose against the sound scores low."""
        span = logprobs[first : max(end, first + 1)]
        spelling = [i for i, s in enumerate(self._surface) if s.strip() and s in word]
        if not spelling or span.shape[0] == 0:
            return 0.0
        emitting = span[~np.isin(span.argmax(axis=1), self._silent)]
        frames = emitting if emitting.shape[0] else span
        return round(float(np.exp(frames[:, spelling].max(axis=1)).mean()), 4)


# --- the decoding processes -------------------------------------------------------------------------------

_DECODERS: dict[str, BeamDecoder] = {}


Spec = tuple[list[str], int, "LMSpec | None", list[int]]  # vocabulary, blank id, LM, ids of <unk> pieces


def _load(specs: dict[str, Spec]) -> None:
    for key, (vocabulary, blank_id, lm, unknown) in specs.items():
        _DECODERS[key] = BeamDecoder(vocabulary, blank_id, lm, unknown)


def _decode(key: str, logprobs: npt.NDArray[np.float32], width: int, hotwords: tuple[Hotword, ...]) -> BeamText:
    return _DECODERS[key].decode(logprobs, width, hotwords)


class BeamPool:
    """Decoders in `workers` spawned processes, each holding every served model's decoder (and n-gram model),
    started on first use."""

    def __init__(self, specs: dict[str, Spec], workers: int) -> None:
        self.specs = specs
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> ProcessPoolExecutor:
        """The pool; the first call also spawns its processes (each loads the decoders: ~1 s, more with an LM)."""
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_load, initargs=(self.specs,)
            )
            self._pool.submit(int)  # spawns every worker now, not at the first request
        return self._pool

    async def decode(
        self, key: str, logprobs: npt.NDArray[np.float32], width: int, hotwords: tuple[Hotword, ...]
    ) -> BeamText:
        import asyncio
        from concurrent.futures.process import BrokenProcessPool

        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.start(), _decode, key, logprobs, width, hotwords
            )
        except BrokenProcessPool:  # a decoding process died (killed, out of memory): the next call gets a new pool
            self._pool = None
            raise


class MissingDecoder(RuntimeError):
    """A package beam search needs is not installed."""


def beam_pool(models: Sequence[tuple[str, str, Manifest, Path]], workers: int) -> BeamPool:
    """The decoders of every served model (name, tag, manifest, store directory: an n-gram LM lies there)."""
    import importlib.util

    if importlib.util.find_spec("pyctcdecode") is None:
        raise MissingDecoder("beam search's pyctcdecode is not installed: pip install --no-deps pyctcdecode==0.5.0")
    specs = {}
    for name, tag, manifest, directory in models:
        d = manifest.decoder
        lm = LMSpec(str(directory / d.lm_file), d.lm_alpha, d.lm_beta) if d.lm_file else None
        if lm is not None and importlib.util.find_spec("kenlm") is None:
            raise MissingDecoder(
                f"model {tag} has an n-gram LM ({d.lm_file}) and KenLM's Python module is not installed: "
                "pip install kenlm==0.3.0 (it builds with g++), or export the model without --lm"
            )
        specs[name] = (list(manifest.vocabulary), manifest.blank_id, lm, manifest.tokenizer.unknown_ids)
    return BeamPool(specs, workers)
