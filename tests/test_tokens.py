"""Token ids -> text, against SentencePiece itself and NeMo's punctuation rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.manifest import TokenizerSpec
from service.recognition.tokens import Detokenizer
from tests.conftest import Exported


@pytest.fixture(scope="module")
def sp_and_detok(tiny_bpe: Exported, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    sp = tiny_bpe.model.tokenizer.tokenizer
    return sp, Detokenizer(tiny_bpe.manifest.vocabulary, tiny_bpe.manifest.tokenizer)


def test_sentencepiece_decode_equal(sp_and_detok) -> None:  # type: ignore[no-untyped-def]
    sp, detok = sp_and_detok
    n = sp.get_piece_size()

    @settings(max_examples=3000, deadline=None)
    @given(st.lists(st.integers(0, n - 1), max_size=20))
    def check(ids: list[int]) -> None:
        assert detok.text(ids) == sp.decode_ids(ids)

    check()


def test_nemo_strips_one_space_before_punctuation() -> None:
    vocab = ["▁a", "b", "▁", "।", ",", "▁।"]
    detok = Detokenizer(vocab, TokenizerSpec(kind="sentencepiece", punctuation=["।", ","]))
    assert detok.text([0, 2, 3]) == "a।"
    assert detok.text([0, 2, 2, 4]) == "a ,"  # only one space goes: NeMo does not fix the model's errors
    assert detok.text([0, 5, 1]) == "a।b"


def test_characters() -> None:
    detok = Detokenizer(["a", " ", "ब", "?"], TokenizerSpec(kind="characters", punctuation=["?"]))
    assert detok.text([2, 0, 1, 3]) == "बa?"
    assert detok.text([]) == ""
