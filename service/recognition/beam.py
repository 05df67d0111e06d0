"""Beam search for one request: hotwords parsed, a model's decoder (service/recognition/prefix_search.py, with
the model's KenLM n-gram model when it has one), its words timed and given a confidence, in decoding processes.

Greedy decoding (service/recognition/ctc.py) is the default and exactly NeMo's. Beam search reads the same
log-probabilities and keeps the `width` best prefixes per frame, scoring each word with the n-gram model
(alpha x LM log-probability + beta per word) and adding a hotword's weight to any prefix that spells it
(partially spelt hotwords get a share by length, so the beam keeps them alive). Width 1 without LM or
hotwords is the greedy path (tested).

A decoder runs in a separate process (BeamPool): the search is pure Python and would hold the entry's GIL for
tens of milliseconds per segment.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.manifest import Manifest, is_arpa
from service.recognition.prefix_search import MARKER, Hotwords, PrefixSearch, WordLM, arpa_unigrams

# A beam's prefixes are pruned below best + PRUNE_LOGP; tokens below TOKEN_MIN_LOGP in a frame are not tried
# unless they are its best (pyctcdecode's defaults, which the search was written to reproduce).
PRUNE_LOGP = -10.0
TOKEN_MIN_LOGP = -5.0
MIN_PROB = 1e-15  # log-probabilities are clipped at log(MIN_PROB) (pyctcdecode's decode_beams does the same)


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
def _hotwords(hotwords: tuple[Hotword, ...]) -> Hotwords:
    """Built once per list, not once per segment: a long request's segments share their request's hotwords."""
    return Hotwords([(h.phrase, h.weight) for h in hotwords])


# The search reads a SentencePiece label that ends with the word marker (the lone "▁" piece every SentencePiece
# vocabulary has, and "▁⁇▁" for <unk>) as "break the next word too", in one flag shared by all beams and frames,
# as pyctcdecode does: a later piece of any beam would then start a word it should continue (seen with a random
# BPE model: "लखिल" became "लख िल"). The lone marker is given as marker + JOINER, <unk> as "▁⁇"; the joiner
# (U+2060, never in a transcript) is removed from words before the LM, hotwords and the answer see them.
JOINER = "\u2060"


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
        labels = [_label(piece, unknown=i in unknown) for i, piece in enumerate(vocabulary)]
        labels.insert(blank_id, "")
        self.blank_id = blank_id
        language_model = None
        if lm is not None:
            import kenlm

            unigrams = arpa_unigrams(lm.path) if is_arpa(lm.path) else None
            language_model = WordLM(kenlm.Model(lm.path), unigrams, lm.alpha, lm.beta)
        self._search = PrefixSearch(labels, language_model, clean=lambda text: text.replace(JOINER, ""))
        self._surface = [label.replace(MARKER, "").replace(JOINER, "") for label in labels]
        self._silent = [i for i, s in enumerate(self._surface) if not s.strip()]  # the blank and spaces

    def decode(self, logprobs: npt.NDArray[np.float32], width: int, hotwords: Sequence[Hotword] = ()) -> BeamText:
        """The best beam of one segment's [frames, vocab+1] log-probabilities (valid frames only)."""
        clipped = np.clip(logprobs.astype(np.float32), math.log(MIN_PROB), 0.0)
        if clipped.shape[0] == 0:
            return BeamText("", [])
        text, word_frames = self._search.search(clipped, width, _hotwords(tuple(hotwords)), PRUNE_LOGP, TOKEN_MIN_LOGP)
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


def beam_pool(models: Sequence[tuple[str, str, Manifest, Path]], workers: int) -> BeamPool:
    """The decoders of every served model (name, tag, manifest, store directory: an n-gram LM lies there)."""
    specs = {}
    for name, _, manifest, directory in models:
        d = manifest.decoder
        lm = LMSpec(str(directory / d.lm_file), d.lm_alpha, d.lm_beta) if d.lm_file else None
        specs[name] = (list(manifest.vocabulary), manifest.blank_id, lm, manifest.tokenizer.unknown_ids)
    return BeamPool(specs, workers)
