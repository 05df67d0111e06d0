"""The written form (inverse text normalisation): the export's compiled grammars applied with kaldifst give NeMo's
own InverseNormalizer's text, each written token knows the spoken words it replaced, and the request policy
refuses what cannot be done."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from export.itn import pack_itn
from service.catalog import ServedModel
from service.errors import BadRequest
from service.manifest import ItnSpec
from service.pipeline.policy import DecodingRules, ItnUnsupported, Policy, WritingRules
from service.recognition.transcript import SegmentText, TimedWord, Transcript
from service.recognition.written import _HALF_DONE, Grammars, Piece, Writing, written

SENTENCES = Path(__file__).parents[1] / "benchmarks" / "data" / "itn_hi.tsv"
DIGIT = re.compile(r"[०-९]")


def sentences() -> list[tuple[str, str]]:
    rows = [line.rstrip("\n").split("\t") for line in SENTENCES.read_text(encoding="utf-8").splitlines()]
    return [(r[0], r[1]) for r in rows if r[0] and not r[0].startswith("#")]


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ItnSpec]:
    directory = tmp_path_factory.mktemp("itn")
    spec = pack_itn("hi", directory)
    assert spec is not None and spec.language == "hi"
    return directory, spec


@pytest.fixture(scope="module")
def grammars(packed: tuple[Path, ItnSpec]) -> Grammars:
    return Grammars.load(*packed)


def written_text(grammars: Grammars, text: str) -> str:
    return " ".join(p.text for p in grammars.rewrite(text.split()))


def test_the_test_sentences_are_forty_with_numbers() -> None:
    rows = sentences()
    assert len(rows) == 40
    assert all(DIGIT.search(w) for _, w in rows) and not any(DIGIT.search(s) for s, _ in rows)


def test_same_text_as_nemos_inverse_normalizer(grammars: Grammars, tmp_path: Path) -> None:
    """Where NeMo writes a number whole, ours is NeMo's text exactly; where NeMo leaves one partly in words, ours
    differs only there (the number whole, or its words as spoken)."""
    from nemo_text_processing.inverse_text_normalization.inverse_normalize import InverseNormalizer

    nemo = InverseNormalizer(lang="hi", cache_dir=str(tmp_path))
    extra = ["दिल्ली में दो सौ लोग हैं", "आज मौसम अच्छा है", "साढ़े चार बजे", "उसने दो हज़ार रुपये दिए"]
    half_done = 0
    for spoken in [s for s, _ in sentences()] + extra:
        theirs = nemo.inverse_normalize(spoken, verbose=False)
        ours = written_text(grammars, spoken)
        assert not _HALF_DONE.search(ours), ours
        if _HALF_DONE.search(theirs):
            half_done += 1
            assert ours != theirs
        else:
            assert ours == theirs, spoken
    assert half_done == 2  # a place name turns the sentence into an "address": the corpus's and this one


def test_each_written_token_knows_its_spoken_words(grammars: Grammars) -> None:
    pieces = grammars.rewrite(["मेरा", "नंबर", "नौ", "आठ", "सात", "छह", "है"])
    assert [(p.first, p.stop, p.text, p.rewritten) for p in pieces] == [
        (0, 1, "मेरा", False),
        (1, 2, "नंबर", False),
        (2, 6, "९८७६", True),
        (6, 7, "है", False),
    ]
    for spoken, _ in sentences():
        words = spoken.split()
        pieces = grammars.rewrite(words)
        assert pieces[0].first == 0 and pieces[-1].stop == len(words)
        assert all(a.stop == b.first for a, b in itertools.pairwise(pieces))
        for p in pieces:
            alone = grammars.rewrite(words[p.first : p.stop])
            if p.rewritten:  # the words it replaced, written alone, are written the same
                assert " ".join(a.text for a in alone) == p.text, (spoken, p)
            else:
                assert p.stop == p.first + 1 and p.text == words[p.first]


def test_half_done_number_is_tagged_again(grammars: Grammars) -> None:
    pieces = grammars.rewrite(["दिल्ली", "में", "दो", "सौ", "लोग", "हैं"])
    assert [(p.first, p.stop, p.text) for p in pieces if p.rewritten] == [(2, 4, "२००")]


def test_words_nothing_takes_come_back_unchanged(grammars: Grammars) -> None:
    words = ["आज", "मौसम", "बहुत", "अच्छा", "है"]
    assert [p.text for p in grammars.rewrite(words)] == words
    assert grammars.rewrite([]) == []


def segment(words: list[tuple[str, float, float, float]], start: float = 0.0) -> SegmentText:
    timed = [TimedWord(w, s, e, c) for w, s, e, c in words]
    return SegmentText(start, timed[-1].end, " ".join(w.word for w in timed), timed, [], -0.1)


def test_written_transcript_keeps_times_and_spoken_text(grammars: Grammars) -> None:
    first = segment([("मेरा", 0.1, 0.4, 0.9), ("नंबर", 0.5, 0.8, 0.8), ("नौ", 0.9, 1.1, 0.7), ("आठ", 1.2, 1.4, 0.95),
                     ("सात", 1.5, 1.7, 0.9), ("छह", 1.8, 2.0, 0.9), ("है", 2.1, 2.3, 0.9)])  # fmt: skip
    second = segment([("आज", 3.0, 3.2, 0.9), ("अच्छा", 3.3, 3.6, 0.9)], 3.0)
    spoken = Transcript(text="मेरा नंबर नौ आठ सात छह है आज अच्छा", duration_s=4.0, segments=[first, second])
    out = written(spoken, grammars)
    assert out.text == "मेरा नंबर ९८७६ है आज अच्छा" and out.text_spoken == spoken.text
    assert out.segments[0].text == "मेरा नंबर ९८७६ है"
    assert out.segments[1] is second  # nothing to write: the segment as it was
    assert out.words[2] == TimedWord("९८७६", 0.9, 2.0, 0.7)  # first word's start, last word's end, lowest confidence
    assert out.words[:2] == first.words[:2] and out.words[3] == first.words[6]
    latin = written(spoken, grammars, "latin")
    assert latin.words[2].word == "9876" and latin.words[0].word == "मेरा"
    assert Writing(grammars, "latin").text("पाँच सौ बीस रुपये दीजिए") == "₹520 दीजिए"
    assert Writing(grammars).text("आज  मौसम") == "आज  मौसम"  # nothing written: the text exactly as it came


def test_policy_refuses_what_cannot_be_written(packed: tuple[Path, ItnSpec], tiny_bpe: object) -> None:
    manifest = tiny_bpe.manifest  # type: ignore[attr-defined]
    with_itn = ServedModel.build("m:1", manifest.model_copy(update={"itn": packed[1]}), "infer", 0, 0, packed[0])
    without = ServedModel.build("n:1", manifest.model_copy(update={"itn": None}), "infer", 0, 0, packed[0])
    policy = Policy(None, DecodingRules())  # type: ignore[arg-type]
    assert policy.writing(with_itn, None) is None  # ASR_ITN off: as spoken
    chosen = policy.writing(with_itn, True, "latin")
    assert chosen is not None and chosen.digits == "latin"
    assert policy.writing(with_itn, False) is None
    with pytest.raises(ItnUnsupported) as refused:
        policy.writing(without, True)
    assert refused.value.status == 400 and refused.value.param == "itn" and "n" in refused.value.message
    with pytest.raises(BadRequest) as bad:
        policy.writing(with_itn, True, "roman")
    assert bad.value.param == "itn_digits"
    on = Policy(None, DecodingRules(), WritingRules(default=True, digits="latin"))  # type: ignore[arg-type]
    assert on.writing(without, None) is None  # the server's default, for a model without grammars: as spoken
    default = on.writing(with_itn, None)
    assert default is not None and default.digits == "latin"
    assert on.writing(with_itn, None, "devanagari").digits == "devanagari"  # type: ignore[union-attr]


def test_a_language_without_grammars_exports_without_them(tmp_path: Path) -> None:
    assert pack_itn("xx", tmp_path) is None and not list(tmp_path.iterdir())
    from export.__main__ import parse_args

    assert parse_args(["--config", "tiny", "--no-itn"]).no_itn and not parse_args(["--config", "tiny"]).no_itn


def test_words_the_tagger_cannot_read_stay_and_do_not_stop_their_neighbours(grammars: Grammars) -> None:
    """The tagger reads the characters of its alphabet (export/itn.py); a word with another one (here a zero-width
    joiner) is left as spoken and the number beside it is still written."""
    odd = "नंबर\u200d"
    assert "\u200d" not in grammars.alphabet and "९" in grammars.alphabet
    pieces = grammars.rewrite(["मेरा", odd, "नौ", "आठ", "सात", "छह", "है"])
    assert [p.text for p in pieces] == ["मेरा", odd, "९८७६", "है"]
    assert grammars.rewrite([odd]) == [Piece(0, 1, odd, False)]
