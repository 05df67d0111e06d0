"""CTC prefix beam search over words, with an optional KenLM n-gram model and weighted hotwords.

The search pyctcdecode 0.5 made the common choice for NeMo CTC models, written here so that beam search needs
nothing but NumPy (and KenLM for an LM): pyctcdecode pins NumPy below 2 and is unmaintained since 2023.
tests/test_prefix_search.py checks it against pyctcdecode's answers where that is installed.

A beam is (text, next_word, word_part, last_label, word_frames, part_frames, logit_score): the finished words,
a word completed at this frame and not yet scored by the LM, the word being spelt, the label of the last
frame, each finished word's (first, end) frames, the spelt word's frames, and the sum of the frames'
log-probabilities along the prefix. Per frame every beam is extended by every label within TOKEN_MIN_LOGP
(and the frame's best): the blank or a repeat keeps the prefix, a word boundary (a label starting with the
SentencePiece marker, or a space) finishes the word being spelt, anything else extends it. Beams that now spell
the same text merge (their probabilities add), each is scored (logit score + alpha x LM log-probability + beta
per word, hotwords' weights, partial words' share), and the `width` best within PRUNE_LOGP of the best go on.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

MARKER = "\u2581"  # SentencePiece's word-start marker
UNKNOWN_CHAR = "\u2047"  # the unknown label of a character vocabulary
NO_FRAMES = (-1, -1)
UNKNOWN_WORD_LOGP = -10.0  # added to the LM score of a word the LM does not know
AVERAGE_WORD_CHARS = 6  # a partial word longer than this pays the unknown penalty in proportion
LOG10_TO_LN = 1.0 / math.log10(math.e)  # KenLM answers in log10

Frames = tuple[int, int]
Beam = tuple[str, str, str, Any, list[Frames], Frames, float]
ScoredBeam = tuple[str, str, str, Any, list[Frames], Frames, float, float]


def normalized_labels(labels: Sequence[str]) -> tuple[list[str], bool]:
    """Labels as the search reads them, and whether they are word pieces (SentencePiece or `##`-style)."""
    out = list(labels)
    pieces = any(s.startswith("##") or s.startswith(MARKER) for s in out)
    if len(out) != len(set(out)):
        raise ValueError("the labels hold duplicates")
    if pieces:
        if any(s.startswith("##") for s in out):
            out = [s[2:] if s.startswith("##") else s if s in ("", MARKER) or _special(s) else MARKER + s for s in out]
        out = ["" if _pad(s) else MARKER + UNKNOWN_CHAR + MARKER if _unk(s) else s for s in out]
    else:
        if "|" in out and " " not in out:
            out[out.index("|")] = " "
        out = ["" if _pad(s) else s for s in out]
        if "_" in out and "" not in out:
            out[out.index("_")] = ""
        out = [UNKNOWN_CHAR if _unk(s) else s for s in out]
    if "" not in out:
        out.append("")
    return out, pieces


def _special(label: str) -> bool:
    return re.fullmatch(r"[<\[].+[>\]]", label) is not None


def _pad(label: str) -> bool:
    return re.fullmatch(r"[<\[]pad[>\]]", label, re.IGNORECASE) is not None


def _unk(label: str) -> bool:
    return re.fullmatch(r"[<\[]unk[>\]]", label, re.IGNORECASE) is not None


class Prefixes:
    """Words, queried by prefix: does any word start with this? and the first such word in insertion order,
    depth first (the words are inserted shortest first)."""

    def __init__(self, words: Sequence[str]) -> None:
        self.root: dict[str, Any] = {}
        for word in words:
            node = self.root
            for char in word:
                node = node.setdefault(char, {})
            node[""] = True  # a word ends here

    def _node(self, prefix: str) -> dict[str, Any] | None:
        node: dict[str, Any] | None = self.root
        for char in prefix:
            node = node.get(char) if node is not None else None
        return node

    def has(self, prefix: str) -> bool:
        """Some word starts with `prefix` (any word at all, for "")."""
        node = self._node(prefix)
        return node is not None and len(node) > 0

    def first_word(self, prefix: str) -> str:
        """The first word found below `prefix` (depth first, children in insertion order, not below a word)."""
        node = self._node(prefix)
        stack: list[tuple[str, Any]] = [(prefix, node)]
        while stack:
            word, node = stack.pop()
            if node.get("") is True:
                return word
            stack.extend(reversed([(word + c, child) for c, child in node.items() if c != ""]))
        raise KeyError(prefix)


class Hotwords:
    """Phrases to favour, each word with its phrase's weight: a text gains the weight for each whole hotword
    word it holds, a word being spelt a share of it by how much of the shortest hotword it starts it has."""

    def __init__(self, weighted: Sequence[tuple[str, float]]) -> None:
        by_weight: dict[float, list[str]] = {}
        for phrase, weight in weighted:
            if phrase.strip():
                by_weight.setdefault(weight, []).extend(phrase.split())
        self.groups = []
        for weight, words in by_weight.items():
            longest_first = sorted(words, key=len, reverse=True)
            pattern = re.compile("|".join(r"(?<!\S)" + re.escape(w) + r"(?!\S)" for w in longest_first))
            self.groups.append((weight, pattern, Prefixes(sorted(words, key=len))))

    def __contains__(self, partial: str) -> bool:
        return any(prefixes.has(partial) for _, _, prefixes in self.groups)

    def score(self, text: str) -> float:
        return float(sum(weight * len(pattern.findall(text)) for weight, pattern, _ in self.groups))

    def score_partial(self, partial: str) -> float:
        scores = [
            weight * len(partial) / len(prefixes.first_word(partial))
            for weight, _, prefixes in self.groups
            if prefixes.has(partial)
        ]
        return max(scores, key=abs) if scores else 0.0


def arpa_unigrams(path: str) -> set[str]:
    """The words of an ARPA file's 1-gram section."""
    words = set()
    with open(path, encoding="utf-8") as f:
        in_unigrams = False
        for raw in f:
            line = raw.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif line == "\\2-grams:":
                break
            if in_unigrams and line:
                parts = line.split("\t")
                if len(parts) == 3:
                    words.add(parts[1])
    if not words:
        raise ValueError(f"{path}: no 1-grams in the ARPA file")
    return words


class WordLM:
    """A KenLM n-gram model scoring whole words: alpha x log-probability (natural log) + beta per word, with a
    penalty for words it does not know; a word being spelt pays the penalty when no known word starts so."""

    def __init__(self, model: Any, unigrams: set[str] | None, alpha: float, beta: float) -> None:
        self.model, self.alpha, self.beta = model, alpha, beta
        self.known = {w for w in unigrams if w in model} if unigrams is not None else set()
        self.prefixes = Prefixes(sorted(self.known)) if unigrams is not None else None

    def start(self) -> Any:
        import kenlm

        state = kenlm.State()
        self.model.BeginSentenceWrite(state)
        return state

    def score(self, state: Any, word: str, last: bool) -> tuple[float, Any]:
        import kenlm

        end = kenlm.State()
        logp = self.model.BaseScore(state, word, end)
        if (self.known and word not in self.known) or word not in self.model:
            logp += UNKNOWN_WORD_LOGP
        if last:
            logp += self.model.BaseScore(end, "</s>", kenlm.State())
        return self.alpha * logp * LOG10_TO_LN + self.beta, end

    def score_partial(self, partial: str) -> float:
        unknown = self.prefixes is None or not self.prefixes.has(partial)
        score = UNKNOWN_WORD_LOGP * unknown
        return score * len(partial) / AVERAGE_WORD_CHARS if len(partial) > AVERAGE_WORD_CHARS else score


def _join(text: str, word: str) -> str:
    return text + " " + word if text and word else text or word


def _add_logs(a: float, b: float) -> float:
    return a + math.log(1 + math.exp(b - a)) if a >= b else b + math.log(1 + math.exp(a - b))


def _merge(beams: list[Beam]) -> list[Beam]:
    """Beams that spell the same text (with the same word being spelt and last label) become one, in the first
    one's place, with the last one's frames; their probabilities add."""
    merged: dict[tuple[str, str, Any], Beam] = {}
    for beam in beams:
        key = (_join(beam[0], beam[1]), beam[2], beam[3])
        held = merged.get(key)
        merged[key] = beam if held is None else (*beam[:6], _add_logs(held[6], beam[6]))
    return list(merged.values())


class PrefixSearch:
    """One vocabulary's search. `labels`: index = output column (the blank is ""); `clean`: how a word reaches
    the LM and the hotwords (e.g. with a joiner removed)."""

    def __init__(self, labels: Sequence[str], lm: WordLM | None = None, clean: Any = None) -> None:
        self.labels, self.pieces = normalized_labels(labels)
        self.lm = lm
        self.clean = clean or (lambda text: text)

    def _scored(
        self,
        beams: list[Beam],
        hotwords: Hotwords,
        lm_cache: dict[Any, Any],
        partial_cache: dict[str, float],
        eos: bool,
    ) -> list[ScoredBeam]:
        clean, scored = self.clean, []
        for text, next_word, part, last, frames, part_frames, logit in beams:
            new_text = _join(text, next_word)
            if self.lm is None:
                total = logit + hotwords.score(clean(new_text)) + hotwords.score_partial(clean(part))
            else:
                key = (new_text, eos)
                if key not in lm_cache:
                    _, before, state = lm_cache[(text, False)]
                    score, after = self.lm.score(state, clean(next_word), eos)
                    lm_cache[key] = (before + score + hotwords.score(clean(new_text)), before + score, after)
                lm_score = lm_cache[key][0]
                if part:
                    if part not in partial_cache:
                        word = clean(part)
                        partial_cache[part] = (
                            hotwords.score_partial(word) if word in hotwords else self.lm.score_partial(word)
                        )
                    lm_score += partial_cache[part]
                total = logit + lm_score
            scored.append((new_text, "", part, last, frames, part_frames, logit, total))
        return scored

    @staticmethod
    def _best(scored: list[ScoredBeam], width: int, prune_logp: float) -> list[ScoredBeam]:
        floor = max(b[-1] for b in scored) + prune_logp
        return heapq.nlargest(width, (b for b in scored if b[-1] >= floor), key=lambda b: b[-1])

    def search(
        self,
        logprobs: npt.NDArray[np.float32],
        width: int,
        hotwords: Hotwords,
        prune_logp: float = -10.0,
        token_min_logp: float = -5.0,
    ) -> tuple[str, list[tuple[str, Frames]]]:
        """The best text of [frames, labels] log-probabilities, and each of its words' (first, end) frames."""
        labels, pieces = self.labels, self.pieces
        lm_cache: dict[Any, Any] = {("", False): (0.0, 0.0, self.lm.start() if self.lm else None)}
        partial_cache: dict[str, float] = {}
        beams: list[Beam] = [("", "", "", None, [], NO_FRAMES, 0.0)]
        break_next = False  # a piece that also ends with the marker breaks the word after it
        for t, column in enumerate(logprobs):
            # float32 scalars: the scores add up in float32 (NumPy 2 keeps float32 + a Python float in float32),
            # as in pyctcdecode, whose answers these then equal bit for bit
            values = column
            # the same candidate order as pyctcdecode's (a set of the indices): ties keep their order
            candidates = set(np.where(column >= token_min_logp)[0]) | {column.argmax()}
            extended: list[Beam] = []
            for index in candidates:
                label, p = labels[index], values[index]
                for text, next_word, part, last, frames, part_frames, logit in beams:
                    if label == "" or label == last:  # blank, or the same label again
                        spans = part_frames if label == "" else (part_frames[0], t + 1)
                        extended.append((text, next_word, part, label, frames, spans, logit + p))
                    elif pieces and (label[:1] == MARKER or break_next):  # a piece that starts a word
                        break_next = False
                        word = label[1:] if label[:1] == MARKER else label
                        if label[-1:] == MARKER:
                            word, break_next = word[:-1], True
                        done = frames if part == "" else [*frames, part_frames]
                        extended.append((text, part, word, label, done, (t, t + 1), logit + p))
                    elif not pieces and label == " ":  # a space ends a word
                        done = frames if part == "" else [*frames, part_frames]
                        extended.append((text, part, "", label, done, NO_FRAMES, logit + p))
                    else:  # the word goes on
                        spans = (t, t + 1) if part_frames[0] < 0 else (part_frames[0], t + 1)
                        extended.append((text, next_word, part + label, label, frames, spans, logit + p))
            scored = self._scored(_merge(extended), hotwords, lm_cache, partial_cache, eos=False)
            beams = [b[:-1] for b in self._best(scored, width, prune_logp)]
        ended = [
            (text, part, "", None, frames if part == "" else [*frames, part_frames], NO_FRAMES, logit)
            for text, _, part, _, frames, part_frames, logit in beams
        ]
        best = self._best(self._scored(_merge(ended), hotwords, lm_cache, partial_cache, eos=True), width, prune_logp)
        text, frames = best[0][0], best[0][4]
        return " ".join(text.split()), list(zip(text.split(), frames, strict=False))
