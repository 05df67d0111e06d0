"""Beam search, n-gram LMs and hotwords: the decoder against greedy decoding, the ARPA builder against KenLM,
the export packing an LM, and every way in (form fields, OpenAI's prompt, the BentoML client) through a real
`bentoml serve` of the demo model (demo/: it hears the synthetic voice)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from json import loads as json_loads
from pathlib import Path
from typing import Any

import bentoml
import httpx
import pytest

from demo.text import read_heldout
from export.lm import build_arpa, fit_to_vocabulary
from service.recognition.beam import BeamDecoder, HotwordError, LMSpec, parse_hotwords
from service.recognition.ctc import greedy_decode
from service.recognition.recognizer import Recognizer
from service.recognition.tokens import Detokenizer
from tests import speech
from tests.audio_files import encode
from tests.conftest import Exported
from tests.server import Server

needs_speech = pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")
# A sentence the demo model mishears (greedy: "समझ" and "ताकि" come out wrong, read off at run time, not copied
# here): an LM or a hotword puts those words right.
MISHEARD = speech.SENTENCES[4]
HOTWORDS = "समझ:20, ताकि"
HOTWORD_WORDS = ["समझ", "ताकि"]
# What the LM is built from: text of the same domain. It holds phrases of the test sentence (as a domain LM holds
# its users' phrases), never the sentence itself (asserted below).
DOMAIN_TEXT = ["हम सब समझ सकते हैं", "कृपया धीरे बोलिए", "ताकि सब लोग आ सकें", "वह धीरे धीरे चलता है", "कृपया ध्यान से सुनिए"]


def errors(text: str) -> float:
    """Word errors against the sentence said."""
    from demo.metrics import wer

    return wer([MISHEARD], [text])


def misheard(heard: str) -> None:
    """The precondition of the tests below: greedy decoding gets the hotword words wrong."""
    assert MISHEARD not in DOMAIN_TEXT and not any(MISHEARD in t for t in DOMAIN_TEXT)
    assert all(w not in heard.split() for w in HOTWORD_WORDS), f"the model now hears {heard!r}: pick another sentence"


def corrected(heard: str, fixed: str) -> None:
    """The hotword words are there now, and fewer words are wrong than greedy decoding had."""
    assert all(w in fixed.split() for w in HOTWORD_WORDS), fixed
    assert errors(fixed) < errors(heard), (heard, fixed)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("  ", ()),
        ("समझ", (("समझ", 10.0),)),
        ("समझ:20, ताकि सब : -5.5", (("समझ", 20.0), ("ताकि सब", -5.5))),
        ("  नई   दिल्ली  :3", (("नई दिल्ली", 3.0),)),
        ("a:b:2", (("a:b", 2.0),)),  # the last colon takes the weight
    ],
)
def test_hotword_syntax(text: str, expected: tuple[tuple[str, float], ...]) -> None:
    got = parse_hotwords(text, 10.0, max_count=3, max_words=3)
    assert tuple((h.phrase, h.weight) for h in got) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,,b", "empty"),
        ("a,", "empty"),
        ("a:x", "not a number"),
        ("a:nan", "outside"),
        ("a:1000", "outside"),
        (":5", "no words"),
        ("a b c d", "at most 3"),
        ("a,b,c,d", "at most 3 per request"),
    ],
)
def test_hotword_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(HotwordError, match=message):
        parse_hotwords(text, 10.0, max_count=3, max_words=3)


def test_arpa_is_a_normalised_model_kenlm_reads(tmp_path: Path) -> None:
    import kenlm

    sentences = [s.split() for s in DOMAIN_TEXT * 3 + ["एक और वाक्य", "सब लोग"]]
    words = [*sorted({w for s in sentences for w in s}), "</s>", "<unk>"]
    for order in (2, 3, 4):
        path = tmp_path / f"lm{order}.arpa"
        path.write_text(build_arpa(sentences, order), encoding="utf-8")
        model = kenlm.Model(str(path))
        assert model.order == order
        contexts = [[], ["हम"], ["हम", "सब"], ["कृपया", "धीरे"], ["अनजान"]]
        for context in contexts:
            state = kenlm.State()
            model.BeginSentenceWrite(state)
            for w in context:
                nxt = kenlm.State()
                model.BaseScore(state, w, nxt)
                state = nxt
            total = 0.0
            for w in words:
                total += 10 ** model.BaseScore(state, w, kenlm.State())
            assert math.isclose(total, 1.0, abs_tol=1e-4), (order, context, total)
        # seen continuations beat unseen ones
        assert model.score("हम सब समझ सकते हैं") > model.score("हैं सकते समझ सब हम")
    with pytest.raises(ValueError, match="no words"):
        build_arpa([[], []], 3)
    with pytest.raises(ValueError, match="at least 2"):
        build_arpa(sentences, 1)


def test_text_is_fitted_to_the_model_characters() -> None:
    assert fit_to_vocabulary("नमस्ते, दुनिया! hello", set("नमस्तेदुनिया")) == ["नमस्ते", "दुनिया"]
    assert fit_to_vocabulary("a, b", None) == ["a,", "b"]


@pytest.fixture(scope="module")
def demo_engine(demo: Exported) -> Recognizer:
    return Recognizer(demo.directory, demo.manifest, "cpu")


@needs_speech
def test_width_one_is_greedy(demo: Exported, demo_engine: Recognizer, tiny_bpe: Exported) -> None:
    """Width 1 without LM or hotwords: the greedy text, exactly (the demo model's characters on speech it hears,
    and a random-weight SentencePiece model's pieces)."""
    clips = [speech.hindi(t) for t in speech.SENTENCES + read_heldout()[48:58]]
    cases = [(demo, demo_engine), (tiny_bpe, Recognizer(tiny_bpe.directory, tiny_bpe.manifest, "cpu"))]
    for model, engine in cases:
        m = model.manifest
        detok = Detokenizer(m.vocabulary, m.tokenizer)
        decoder = BeamDecoder(m.vocabulary, m.blank_id, None, m.tokenizer.unknown_ids)
        for clip in clips:
            logprobs = engine.forward([clip])[0]
            greedy = detok.text(greedy_decode(logprobs, logprobs.shape[0], m.blank_id).token_ids.tolist())
            assert decoder.decode(logprobs, 1).text == " ".join(greedy.split()), model.config
            if model is demo:
                assert decoder.decode(logprobs, 1).text == greedy  # no stray spaces to tidy: exactly


@needs_speech
def test_lm_and_hotwords_put_misheard_words_right(demo: Exported, demo_engine: Recognizer, tmp_path: Path) -> None:
    m = demo.manifest
    arpa = tmp_path / "domain.arpa"
    arpa.write_text(build_arpa([s.split() for s in DOMAIN_TEXT], 3), encoding="utf-8")
    logprobs = demo_engine.forward([speech.hindi(MISHEARD)])[0]
    plain = BeamDecoder(m.vocabulary, m.blank_id)
    with_lm = BeamDecoder(m.vocabulary, m.blank_id, LMSpec(str(arpa), 0.5, 1.0))
    heard = plain.decode(logprobs, 16).text
    misheard(heard)
    assert with_lm.decode(logprobs, 16).text == MISHEARD
    hotwords = parse_hotwords("समझ:20", 10.0, 10, 5)
    hot = plain.decode(logprobs, 16, hotwords).text
    assert "समझ" in hot.split() and errors(hot) < errors(heard)
    # a negative weight keeps a word out; a hotword nobody said changes nothing
    assert "सब" not in plain.decode(logprobs, 16, parse_hotwords("सब:-30", 10.0, 10, 5)).text.split()
    assert plain.decode(logprobs, 16, parse_hotwords("हिमालय:20", 10.0, 10, 5)).text == plain.decode(logprobs, 16).text
    # words keep their order and times: each starts where the last ended or later, confidence in (0, 1]
    words = plain.decode(logprobs, 16, hotwords).words
    assert [w.word for w in words] == hot.split()
    assert all(a.end_frame <= b.first_frame for a, b in itertools.pairwise(words))
    assert all(0 < w.confidence <= 1 for w in words)


def test_export_packs_the_lm_and_refuses_an_unreadable_one(tiny_char: Exported, tmp_path: Path) -> None:
    from export.pipeline import DecoderOptions, LMError, pack_decoder

    m = tiny_char.manifest
    vocab = (list(m.vocabulary), m.blank_id, m.tokenizer)
    arpa = tmp_path / "x.arpa"
    arpa.write_text(build_arpa([["a", "b"], ["b", "c"]], 2), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    spec = pack_decoder(DecoderOptions(arpa, 0.7, 2.0, 8, "test text"), vocab, out)
    assert (spec.lm_file, spec.lm_alpha, spec.lm_beta, spec.beam_width, spec.lm_note) == (
        "lm.arpa",
        0.7,
        2.0,
        8,
        "test text",
    )
    assert (out / "lm.arpa").read_bytes() == arpa.read_bytes()
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a language model" * 10)
    with pytest.raises(LMError, match="cannot be used"):
        pack_decoder(DecoderOptions(garbage), vocab, out)
    assert pack_decoder(DecoderOptions(None, beam_width=4), vocab, out).lm_file == ""


# --- through the service ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_model(demo: Exported, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The demo model exported again with an LM of the domain's text packed (the normal export, --lm)."""
    from export.__main__ import quiet_nemo
    from export.pipeline import DecoderOptions, Options, run
    from export.sources import from_nemo
    from tests.conftest import DEMO_CHECKPOINT

    work = tmp_path_factory.mktemp("lm-export")
    arpa = work / "domain.arpa"
    arpa.write_text(build_arpa([s.split() for s in DOMAIN_TEXT], 3), encoding="utf-8")
    quiet_nemo()
    loaded = from_nemo(DEMO_CHECKPOINT, None)
    options = Options(name="stt_hi_demo_lm", workdir=work / "out", decoder=DecoderOptions(arpa, 0.5, 1.0, 16))
    manifest, tag, directory = run(loaded, options)
    assert tag is not None and manifest.decoder.lm_file == "lm.arpa"
    assert (Path(bentoml.models.get(tag).path) / "lm.arpa").read_bytes() == arpa.read_bytes()
    return Exported("demo_lm", loaded.model, manifest, tag, directory)


@pytest.fixture(scope="module")
def server(lm_model: Exported, demo: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "ASR_MODELS": f"{lm_model.tag},{demo.tag}",
        "ASR_DEVICE": "cpu",
        "ASR_MAX_HOTWORDS": "3",
        "ASR_SEGMENT_S": "4",  # so that the joined sentences make several segments
    }
    with Server(env, tmp_path_factory.mktemp("beam") / "server.log") as s:
        yield s


def _post(server: Server, wav: bytes, path: str = "/transcribe", **fields: Any) -> httpx.Response:
    field = "audio" if path == "/transcribe" else "file"
    data = {k: str(v) for k, v in fields.items()}
    return httpx.post(server.url + path, files={field: ("a.wav", wav, "audio/wav")}, data=data, timeout=120)


PLAIN = "stt_hi_demo_conformer_ctc"


@needs_speech
@pytest.mark.slow
def test_service_decodes_as_asked(server: Server) -> None:
    wav = encode(speech.hindi(MISHEARD), 16000)
    greedy = _post(server, wav).json()
    misheard(greedy["text"])  # the default: greedy, the LM unused
    assert _post(server, wav, decoding="greedy").json()["text"] == greedy["text"]
    beam = _post(server, wav, decoding="beam", timestamps="true").json()
    assert beam["text"] == MISHEARD  # the packed LM at work
    assert [w["word"] for w in beam["words"]] == MISHEARD.split()
    starts = [w["start"] for w in beam["words"]]
    assert starts == sorted(starts) and all(w["start"] <= w["end"] <= beam["duration_s"] for w in beam["words"])
    assert all(0 < w["confidence"] <= 1 for w in beam["words"])
    # a model without an LM: hotwords alone; they imply beam search
    hot = _post(server, wav, model=PLAIN, hotwords=HOTWORDS)
    assert hot.status_code == 200
    corrected(greedy["text"], hot.json()["text"])
    assert _post(server, wav, model=PLAIN, decoding="beam").json()["text"] == greedy["text"]
    # text formats carry the beam's text too
    srt = _post(server, wav, decoding="beam", response_format="srt").text
    assert MISHEARD in srt


@needs_speech
@pytest.mark.slow
def test_long_audio_under_beam_search(server: Server) -> None:
    audio, _ = speech.joined(speech.SENTENCES[:4], pause_s=0.6)
    body = _post(server, encode(audio, 16000), model=PLAIN, decoding="beam", timestamps="true").json()
    greedy = _post(server, encode(audio, 16000), model=PLAIN).json()
    assert len(body["segments"]) == len(greedy["segments"]) > 1
    assert body["text"] == " ".join(s["text"] for s in body["segments"])
    assert body["text"] == greedy["text"]  # these sentences the model hears right either way
    ends = [w["end"] for w in body["words"]]
    assert ends == sorted(ends) and ends[-1] <= body["duration_s"]


@needs_speech
@pytest.mark.slow
@pytest.mark.parametrize(
    ("fields", "status", "needle"),
    [
        ({"hotwords": "समझ:x"}, 400, "not a number"),
        ({"hotwords": "a,b,c,d"}, 400, "at most 3"),
        ({"hotwords": "एक दो तीन चार पाँच छह"}, 400, "at most 5"),
        ({"hotwords": "समझ", "decoding": "greedy"}, 400, "need beam search"),
        ({"decoding": "viterbi"}, 400, "decoding"),
    ],
)
def test_bad_decoding_fields_are_refused(server: Server, fields: dict[str, str], status: int, needle: str) -> None:
    r = _post(server, encode(speech.hindi(MISHEARD), 16000), **fields)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert needle in r.json()["message"]


@needs_speech
@pytest.mark.slow
def test_openai_prompt_is_read_as_hotwords(server: Server) -> None:
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="-", max_retries=0)
    wav = encode(speech.hindi(MISHEARD), 16000)
    plain = client.audio.transcriptions.create(model=PLAIN, file=("a.wav", wav))
    misheard(plain.text)
    hot = client.audio.transcriptions.create(model=PLAIN, file=("a.wav", wav), prompt=HOTWORDS)
    corrected(plain.text, hot.text)
    with pytest.raises(BadRequestError) as caught:
        client.audio.transcriptions.create(model=PLAIN, file=("a.wav", wav), prompt="a:b")
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "prompt" and "hotwords" in error["message"]


@needs_speech
@pytest.mark.slow
def test_bentoml_client_takes_the_decoding_fields(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(encode(speech.hindi(MISHEARD), 16000))
    with bentoml.SyncHTTPClient(server.url) as client:
        assert client.transcribe(audio=path, decoding="beam")["text"] == MISHEARD
        heard = client.transcribe(audio=path, model=PLAIN)["text"]
        with_hotwords = client.transcribe(audio=path, model=PLAIN, hotwords=HOTWORDS)["text"]
        corrected(heard, with_hotwords)
        text = client.transcribe(audio=path, model=PLAIN, hotwords=HOTWORDS, response_format="text")
        assert text.strip() == with_hotwords
        with pytest.raises(bentoml.exceptions.BentoMLException) as caught:
            client.transcribe(audio=path, hotwords="x:y")
        assert getattr(caught.value, "error_code", None) == 400 and "not a number" in str(caught.value)


@needs_speech
@pytest.mark.slow
def test_readme_hotwords_example_runs(server: Server, tmp_path: Path) -> None:
    import subprocess

    from tests.test_readme import example

    (tmp_path / "speech.wav").write_bytes(encode(speech.hindi(MISHEARD), 16000))
    command = example("hotwords").replace("http://127.0.0.1:3000", server.url)
    out = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)
    body = json_loads(out.stdout)
    assert "समझ" in body["text"].split() and body["words"]


def test_lm_command_writes_an_arpa_fitted_to_the_model(tiny_char: Exported, tmp_path: Path) -> None:
    import kenlm

    from export.lm import main

    text = tmp_path / "corpus.txt"
    text.write_text("नमस्ते, दुनिया! hello\nहम सब समझ सकते हैं।\n\n", encoding="utf-8")
    out = tmp_path / "lm.arpa"
    assert main(["--text", str(text), "--out", str(out), "--order", "2", "--model", tiny_char.tag]) == 0
    model = kenlm.Model(str(out))
    first_order = out.read_text(encoding="utf-8").split("\\2-grams:")[0]
    unigrams = {line.split("\t")[1] for line in first_order.splitlines() if "\t" in line}
    # fitted to the model's characters: no Latin word, no punctuation stuck to a word ("।" is not in it either)
    assert {"नमस्ते", "दुनिया", "सकते"} <= unigrams and not {"hello", "नमस्ते,", "हैं।"} & unigrams
    assert model.order == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert main(["--text", str(empty), "--out", str(tmp_path / "none.arpa")]) == 1


@needs_speech
@pytest.mark.slow
def test_bentoml_async_client_takes_the_decoding_fields(server: Server, tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "a.wav"
    path.write_bytes(encode(speech.hindi(MISHEARD), 16000))

    async def calls() -> tuple[Any, Any, Any, Any]:
        async with bentoml.AsyncHTTPClient(server.url, timeout=120) as client:
            beam = await client.transcribe(audio=path, decoding="beam", timestamps=True)
        async with bentoml.AsyncHTTPClient(server.url, timeout=120) as client:
            hot = await client.transcribe(audio=path, model=PLAIN, hotwords=HOTWORDS, response_format="vtt")
        async with bentoml.AsyncHTTPClient(server.url, timeout=120) as client:
            greedy = await client.transcribe(audio=path, model=PLAIN, decoding="greedy")
        async with bentoml.AsyncHTTPClient(server.url, timeout=120) as client:
            try:
                await client.transcribe(audio=path, decoding="greedy", hotwords="समझ")
                refused: Any = None
            except bentoml.exceptions.BentoMLException as exc:
                refused = exc
        return beam, hot, greedy, refused

    beam, hot, greedy, refused = asyncio.run(calls())
    assert beam["text"] == MISHEARD and [w["word"] for w in beam["words"]] == MISHEARD.split()
    misheard(greedy["text"])
    cues = " ".join(line for line in hot.splitlines()[1:] if line and "-->" not in line)
    assert hot.startswith("WEBVTT") and all(w in cues.split() for w in HOTWORD_WORDS)
    assert getattr(refused, "error_code", None) == 400 and "need beam search" in str(refused)
