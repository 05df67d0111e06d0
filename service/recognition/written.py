"""The written form of a transcript: inverse text normalisation ("पाँच सौ बीस रुपये" -> "₹५२०") with word times
kept.

The grammars are NeMo's (nemo_text_processing), compiled at export into a tagger (re-labelled to read
characters) and a verbaliser (export/itn.py); here kaldifst (OpenFst, a 1.5-MB wheel) applies them as NeMo's
InverseNormalizer does: the text through the tagger (shortest path), the tokens parsed, each token through the
verbaliser, trying its fields' orders in turn.
Two differences, both on purpose: each token is verbalised on its own (NeMo verbalises the sentence, and when one
token fails it gives back the whole sentence spoken; here that token alone stays spoken), and the tagger's path
is walked arc by arc to learn which spoken words each token consumed, so that a written token takes the times of
the words it replaced (start of the first, end of the last, the lowest confidence).
"""

from __future__ import annotations

import itertools
import re
import threading
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from service.manifest import ItnSpec
from service.recognition.transcript import SegmentText, TimedWord, Transcript

DIGITS = ("devanagari", "latin")
_TO_LATIN = str.maketrans("०१२३४५६७८९", "0123456789")
# a token's fields: `key: "value"`, `key: true`, `key {` and `}` (nemo_text_processing's TokenParser's syntax)
_SYNTAX = re.compile(r'\s*(?:([A-Za-z_][A-Za-z0-9_]*)\s*(?::\s*(?:"([^"]*)"|(true|false))|(\{))|(\}))')
_PRESERVE_ORDER = "preserve_order"
CONTEXT_WORDS = 2  # words tagged on each side of a number word (a unit, a month, बजे; "साढ़े" is a number word)
MAX_REMEMBERED = 200_000  # words whose verdict on their own is kept (~30 MB at most)
_MAX_ORDERS = 720  # field orders tried per token (NeMo's limit per sentence split is 729)
# A number left partly in words ("दो सौ" -> "२ सौ"): a digit, then a multiplier still spoken. The Hindi grammars'
# address rule does this: a place name anywhere in a sentence ("दिल्ली से आगरा दो सौ किलोमीटर") makes the whole
# sentence one "address" whose number words are written digit by digit (docs/accuracy.md, "Written form").
_HALF_DONE = re.compile(r"[०-९0-9]\s+(?:सौ|हज़ार|हजार|लाख|करोड़|करोड|अरब)(?:\s|$)")

Fields = list[tuple[str, Any]]  # a token's fields in the tagger's order; a value is a str, a bool or Fields


@dataclass(frozen=True)
class Piece:
    """Spoken words [first, stop) of the input and what they are written as."""

    first: int
    stop: int
    text: str
    rewritten: bool


class Grammars:
    """One language's compiled tagger and verbaliser (kaldifst is imported only when a model has them)."""

    def __init__(self, tagger: Any, verbalizer: Any, alphabet: str) -> None:
        self.tagger, self.verbalizer = tagger, verbalizer
        self.alphabet = frozenset(alphabet)  # what the tagger reads (a word with any other character is left)
        self._alone: dict[str, bool] = {}  # word -> whether the grammars rewrite it on its own

    @classmethod
    def load(cls, directory: Path, spec: ItnSpec) -> Grammars:
        import kaldifst

        tagger = kaldifst.StdVectorFst.read(str(directory / spec.tagger_file))
        verbalizer = kaldifst.StdVectorFst.read(str(directory / spec.verbalizer_file))
        if tagger is None or verbalizer is None:
            raise OSError(f"cannot read the ITN grammars in {directory}")
        return cls(tagger, verbalizer, spec.alphabet)

    def rewrite(self, words: Sequence[str]) -> list[Piece]:
        """Spoken words -> pieces covering them in order, each one word or several written as one. Words the
        grammars do not take (or a tagger path this code cannot follow) come back as they were.

        The tagger costs ~0.6 ms per word on a CPU (its paths branch at every character), so only windows are tagged:
        each run of words that the grammars rewrite on their own (number words), with CONTEXT_WORDS on each side
        (बजे, रुपये, a month). A sentence without such a word is not tagged at all. Rules whose context lies
        farther away do not apply (docs/accuracy.md, "Written form")."""
        readable = [self.alphabet.issuperset(w) for w in words]
        changes = [ok and self._changes(w) for w, ok in zip(words, readable, strict=True)]
        if not any(changes):
            return _spoken(words, 0, len(words))
        windows: list[list[int]] = []
        for i, hot in enumerate(changes):
            if not hot:
                continue
            first, stop = i, i + 1  # context on each side, as far as the tagger can read it
            while first > max(0, i - CONTEXT_WORDS) and readable[first - 1]:
                first -= 1
            while stop < min(len(words), i + 1 + CONTEXT_WORDS) and readable[stop]:
                stop += 1
            if windows and first <= windows[-1][1]:
                windows[-1][1] = stop
            else:
                windows.append([first, stop])
        pieces: list[Piece] = []
        done = 0
        for first, stop in windows:
            pieces += _spoken(words, done, first)
            pieces += self._tagged(words[first:stop], first)
            done = stop
        return pieces + _spoken(words, done, len(words))

    def _changes(self, word: str) -> bool:
        """Whether the grammars rewrite this word on its own (remembered: speech repeats its words)."""
        known = self._alone.get(word)
        if known is None:
            known = any(p.rewritten for p in self._tagged([word], 0))
            if len(self._alone) < MAX_REMEMBERED:
                self._alone[word] = known
        return known

    def _tagged(self, words: Sequence[str], offset: int) -> list[Piece]:
        """The words through the tagger as one text (word indices from `offset`). A token that leaves a number
        partly in words is tagged again without its first word (which stays as spoken), until its number is
        whole or nothing is left to try."""
        unchanged = _spoken(words, 0, len(words), offset)
        if not words:
            return []
        arcs = _best_path(self.tagger, [ord(ch) for ch in " ".join(words)])
        if arcs is None:
            return unchanged
        output = bytes(o for _, o in arcs if o)
        try:
            tokens = _parse(output.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return unchanged
        spans = _word_spans(arcs, tokens, [len(w) for w in words])
        if spans is None or len(spans) != len(tokens):
            return unchanged
        pieces = []
        for (first, stop), (_, serialized, fields) in zip(spans, tokens, strict=True):
            spoken = " ".join(words[first:stop])
            written = self._verbalize(serialized, fields)
            if written is None:  # the verbaliser takes none of its orders: the words stay as spoken
                pieces += unchanged[first:stop]
            elif _HALF_DONE.search(written):  # tagged again without its first word, which stays as spoken
                pieces += [unchanged[first], *self._tagged(words[first + 1 : stop], offset + first + 1)]
            else:
                pieces.append(Piece(offset + first, offset + stop, written, written != spoken))
        return pieces

    def _verbalize(self, serialized: str, fields: Fields) -> str | None:
        if len(fields) == 1 and fields[0][0] == "name" and isinstance(fields[0][1], str):
            return fields[0][1]  # a plain word (the verbaliser's `name` rule writes its value)
        for option in itertools.islice(_orders(fields, serialized), _MAX_ORDERS):
            arcs = _best_path(self.verbalizer, list(option.encode("utf-8")))
            if arcs is not None:
                return re.sub(" +", " ", bytes(o for _, o in arcs if o).decode("utf-8")).strip()
        return None


def _spoken(words: Sequence[str], first: int, stop: int, offset: int = 0) -> list[Piece]:
    """Words [first, stop) left as they were, one piece each (indices from `offset`)."""
    return [Piece(offset + i, offset + i + 1, words[i], False) for i in range(first, stop)]


def _best_path(fst: Any, labels: list[int]) -> list[tuple[int, int]] | None:
    """The (input, output) label pairs along the lowest-cost path of `labels` through `fst`; None when it takes
    no path. The tagger reads characters (code points), the verbaliser UTF-8 bytes; both write bytes."""
    import kaldifst

    lattice = kaldifst.compose(kaldifst.make_linear_acceptor(labels), fst)
    if lattice.num_states == 0:
        return None
    best = kaldifst.shortest_path(lattice, 1)
    state, arcs = best.start, []
    while state >= 0:
        following = list(kaldifst.ArcIterator(best, state))
        if not following:
            break
        arcs.append((following[0].ilabel, following[0].olabel))
        state = following[0].nextstate
    return arcs if state >= 0 else None


Token = tuple[int, str, Fields]  # where it starts in the tagger's output (bytes), its text there, its fields


def _parse(tagged: str) -> list[Token]:
    """`tokens { a: "x" b { c: "y" } } tokens { ... }` -> the tokens. ValueError when it is not that syntax."""
    tokens: list[Token] = []
    pos = 0
    while tagged[pos:].strip():
        start = len(tagged) - len(tagged[pos:].lstrip())
        fields, pos = _fields(tagged, pos, top=True)
        if len(fields) != 1 or fields[0][0] != "tokens" or not isinstance(fields[0][1], list):
            raise ValueError(f"not a token at {start}")
        tokens.append((len(tagged[:start].encode("utf-8")), tagged[start:pos], fields[0][1]))
    return tokens


def _fields(tagged: str, pos: int, top: bool = False) -> tuple[Fields, int]:
    fields: Fields = []
    while True:
        match = _SYNTAX.match(tagged, pos)
        if match is None:
            raise ValueError(f"unexpected text at {pos}")
        pos = match.end()
        key, value, flag, opening, closing = match.groups()
        if closing:
            if top:
                raise ValueError(f"unbalanced }} at {pos}")
            return fields, pos
        if opening:
            inner, pos = _fields(tagged, pos)
            fields.append((key, inner))
        else:
            fields.append((key, value if value is not None else flag == "true"))
        if top:
            return fields, pos


def _orders(fields: Fields, serialized: str) -> Any:
    """The token as the tagger wrote it, then its fields' other orders (as NeMo's generate_permutations)."""
    yield serialized
    for body in _permute(fields):
        yield f"tokens {{ {body} }}"


def _permute(fields: Fields) -> Any:
    orders = [fields] if any(k == _PRESERVE_ORDER for k, _ in fields) else itertools.permutations(fields)
    for order in orders:
        parts: list[list[str]] = []
        for key, value in order:
            if isinstance(value, list):
                parts.append([f"{key} {{ {inner} }}" for inner in _permute(value)])
            elif isinstance(value, bool):
                parts.append([f"{key}: {'true' if value else 'false'}"])
            else:
                parts.append([f'{key}: "{value}"'])
        for combination in itertools.product(*parts):
            yield " ".join(combination)


def _word_spans(
    arcs: list[tuple[int, int]], tokens: list[Token], word_sizes: list[int]
) -> list[tuple[int, int]] | None:
    """Which words each token consumed: every input character belongs to the token whose output was being
    written when the tagger read it, and a word to the token that read most of its characters. None unless that
    gives each token a run of whole words, in order."""
    starts = [start for start, _, _ in tokens]
    owner: list[int] = []  # per input character
    written = 0
    for ilabel, olabel in arcs:
        if olabel:
            written += 1
        if ilabel:
            owner.append(max(0, bisect_right(starts, max(0, written - 1)) - 1))
    at = 0
    word_token = []
    for n, size in enumerate(word_sizes):
        if at + size > len(owner):
            return None
        votes = owner[at : at + size]
        word_token.append(max(set(votes), key=votes.count))
        at += size + (1 if n + 1 < len(word_sizes) else 0)  # the space between words
    spans: list[tuple[int, int]] = []
    for n, token in enumerate(word_token):
        if token == len(spans) - 1:
            spans[-1] = (spans[-1][0], n + 1)
        elif token == len(spans):
            spans.append((n, n + 1))
        else:
            return None
    return spans


class WrittenForm:
    """The served models' grammars, each read at its first use (Hindi's 8.8 MB in ~0.05 s), or at start-up with
    ASR_ITN on."""

    def __init__(self) -> None:
        self._loaded: dict[Path, Grammars] = {}
        self._lock = threading.Lock()

    def grammars(self, directory: Path, spec: ItnSpec) -> Grammars:
        with self._lock:
            if directory not in self._loaded:
                self._loaded[directory] = Grammars.load(directory, spec)
            return self._loaded[directory]


@dataclass(frozen=True)
class Writing:
    """What a request asked for: one language's grammars and the digits to write."""

    grammars: Grammars
    digits: str = "devanagari"

    def transcript(self, transcript: Transcript) -> Transcript:
        return written(transcript, self.grammars, self.digits)

    def text(self, text: str) -> str:
        """Plain text (a realtime turn's transcript) in written form."""
        pieces = self.grammars.rewrite(text.split())
        if not any(p.rewritten for p in pieces):
            return text
        return " ".join(_digits(p.text, self.digits) if p.rewritten else p.text for p in pieces)

    async def transcript_async(self, transcript: Transcript) -> Transcript:
        """As transcript(), in a worker thread: hours of text take seconds, which the event loop must not wait."""
        return await anyio.to_thread.run_sync(self.transcript, transcript)

    async def text_async(self, text: str) -> str:
        """As text(), in a worker thread."""
        return await anyio.to_thread.run_sync(self.text, text)


def _digits(text: str, digits: str) -> str:
    return text.translate(_TO_LATIN) if digits == "latin" else text


def written(transcript: Transcript, grammars: Grammars, digits: str = "devanagari") -> Transcript:
    """The transcript in written form, segment by segment (a number is never split across segments: the VAD
    cuts at pauses). Each segment's words are rewritten; a written token is timed from the first spoken word it
    replaced to the last, with their lowest confidence. The spoken text stays in `text_spoken`."""
    segments = [_written_segment(s, grammars, digits) for s in transcript.segments]
    text = segments[0].text if len(segments) == 1 else " ".join(s.text for s in segments if s.text)
    return replace(transcript, text=text, segments=segments, text_spoken=transcript.text)


def _written_segment(segment: SegmentText, grammars: Grammars, digits: str) -> SegmentText:
    words = segment.words
    pieces = grammars.rewrite([w.word for w in words])
    if not any(p.rewritten for p in pieces):
        return segment
    timed = []
    for piece in pieces:
        replaced = words[piece.first : piece.stop]
        text = _digits(piece.text, digits) if piece.rewritten else piece.text
        timed.append(
            TimedWord(text, replaced[0].start, replaced[-1].end, min(w.confidence for w in replaced))
            if piece.rewritten
            else replaced[0]
        )
    return replace(segment, text=" ".join(w.word for w in timed), words=timed)
