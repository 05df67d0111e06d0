"""Token ids -> text, reproducing NeMo's CTC decoding of character and SentencePiece vocabularies."""

from __future__ import annotations

import re
from collections.abc import Sequence

from service.manifest import TokenizerSpec


class Detokenizer:
    """Turns emitted token ids into the text NeMo's `transcribe()` returns for them."""

    def __init__(self, vocabulary: Sequence[str], spec: TokenizerSpec) -> None:
        self.vocabulary = list(vocabulary)
        self.spec = spec
        self._punct = (
            re.compile(r"(\s)(" + "|".join(re.escape(p) for p in spec.punctuation) + ")") if spec.punctuation else None
        )

    def text(self, token_ids: Sequence[int]) -> str:
        if self.spec.kind == "characters":
            raw = "".join(self.vocabulary[i] for i in token_ids)
        else:
            raw = self._sentencepiece(token_ids)
        # NeMo (decode_tokens_to_str_with_strip_punctuation): drop one space before punctuation marks.
        return self._punct.sub(r"\2", raw) if self._punct else raw

    def starts_word(self, token_id: int, first: bool) -> bool:
        """Whether this token begins a new word (used to group tokens into timed words)."""
        piece = self.vocabulary[token_id]
        if self.spec.kind == "characters":
            return piece.isspace()
        return first or piece.startswith(self.spec.word_marker)

    def _sentencepiece(self, token_ids: Sequence[int]) -> str:
        """SentencePiece's Decode: control pieces vanish, <unk> prints its surface, <0xNN> pieces are bytes,
        the word marker becomes a space, and the first text piece loses its leading marker."""
        marker, special = self.spec.word_marker, self.spec.special
        parts: list[str] = []
        pending = bytearray()
        at_start = True

        def emit(text: str) -> None:
            nonlocal at_start
            at_start = False
            parts.append(text)

        for token_id in token_ids:
            kind = special.get(token_id)
            if kind == "byte":
                pending.append(int(self.vocabulary[token_id][3:-1], 16))
                continue
            if pending:
                emit(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if kind == "control":
                continue
            if kind == "unknown":
                emit(self.spec.unknown_surface)
                continue
            piece = self.vocabulary[token_id]
            if at_start and piece.startswith(marker):
                piece = piece[len(marker) :]
            emit(piece.replace(marker, " "))
        if pending:
            emit(pending.decode("utf-8", errors="replace"))
        return "".join(parts)
