"""Several models in one service: selection by name and language, one batch queue per model, parity under
mixed concurrent load. The three generated models differ in vocabulary (BPE 128 pieces / characters), feature
count (80 / 64 mels), subsampling (4x / 8x) and language (hi / mr)."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.catalog import Catalog, ServedModel, UnknownLanguage, UnknownModel
from tests import speech
from tests.conftest import Exported
from tests.server import Server
from tests.test_service_e2e import error, nemo_texts, post, wav16


def served(exported: Exported, index: int, language: str = "") -> ServedModel:
    manifest = exported.manifest.model_copy(update={"language": language}) if language else exported.manifest
    return ServedModel.build(exported.tag, manifest, f"infer_{index}", 30.0)


def test_catalog_selects_by_name_tag_and_language(tiny_bpe: Exported, tiny_char: Exported, tiny_fast: Exported) -> None:
    catalog = Catalog([served(tiny_bpe, 0), served(tiny_char, 1), served(tiny_fast, 2)])
    bpe, char, fast = catalog.models
    assert (bpe.language, char.language, fast.language) == ("hi", "mr", "hi")
    assert catalog.select() is bpe
    assert catalog.select(model=char.name) is char and catalog.select(model=fast.tag) is fast
    assert catalog.select(model=f"{char.name}:latest") is char
    assert catalog.select(language="MR") is char and catalog.select(language="hi") is bpe  # first in hi
    assert catalog.select(model=fast.name, language="hi") is fast
    with pytest.raises(UnknownModel, match=f"served: {bpe.name}, {char.name}, {fast.name}"):
        catalog.select(model="whisper-1")
    with pytest.raises(UnknownLanguage, match=r"'en' is not served; served: hi .*, mr .*"):
        catalog.select(language="en")
    with pytest.raises(UnknownLanguage, match=f"model '{char.name}' transcribes 'mr', not 'hi'"):
        catalog.select(model=char.name, language="hi")
    with pytest.raises(ValueError, match="more than once"):
        Catalog([served(tiny_bpe, 0), served(tiny_bpe, 1)])
    # each model keeps its own limits: the 8x model's frame shift, and segment lengths in its own samples
    assert fast.manifest.frame_shift_s == pytest.approx(0.08) and bpe.manifest.frame_shift_s == pytest.approx(0.04)
    assert char.manifest.frontend.n_mels == 64 and bpe.manifest.frontend.n_mels == 80
    assert bpe.segment_samples == 30 * bpe.manifest.sample_rate


@pytest.fixture(scope="module")
def models(tiny_bpe: Exported, tiny_char: Exported, tiny_fast: Exported) -> list[Exported]:
    return [tiny_bpe, tiny_char, tiny_fast]


@pytest.fixture(scope="module")
def multi_server(models: list[Exported], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"ASR_MODELS": ",".join(m.tag for m in models), "ASR_DEVICE": "cpu", "ASR_BATCH_MAX_LATENCY_MS": "20000"}
    with Server(env, tmp_path_factory.mktemp("logs") / "multi.log") as server:
        yield server


needs_speech = pytest.mark.skipif(not speech.have_espeak(), reason="espeak-ng and sox are needed for Hindi speech")


def clips() -> list[np.ndarray]:
    sentences = [speech.hindi(t) for t in speech.SENTENCES]
    return [*sentences, sentences[1][:6000], speech.noise(3.0, 7)]


def batched_items(metrics: str, method: str) -> tuple[float, float]:
    """(segments, batches) the recognizer's queue for `method` dispatched, from BentoML's histogram."""

    def series(kind: str) -> float:
        pattern = rf'adaptive_batch_size_{kind}\{{[^}}]*method_name="{method}"[^}}]*\}} (\S+)'
        return sum(float(v) for v in re.findall(pattern, metrics))

    return series("sum"), series("count")


@needs_speech
@pytest.mark.slow
def test_mixed_concurrent_load_matches_nemo_per_model(
    multi_server: Server, models: list[Exported], tmp_path: Path
) -> None:
    audio = clips()
    expected = {m.tag: nemo_texts(m.model, audio, tmp_path) for m in models}
    jobs = [(m, i) for m in models for i in range(len(audio))] * 2
    random.Random(0).shuffle(jobs)
    before = httpx.get(multi_server.url + "/metrics", timeout=10).text

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=180) as client:
            return await asyncio.gather(
                *[
                    client.post(
                        multi_server.url + "/transcribe",
                        files={"audio": ("a.wav", wav16(audio[i]), "audio/wav")},
                        data={"model": m.tag.split(":")[0]},
                    )
                    for m, i in jobs
                ]
            )

    responses = asyncio.run(all_at_once())
    assert [r.status_code for r in responses] == [200] * len(jobs)
    for (m, i), r in zip(jobs, responses, strict=True):
        body = r.json()
        assert body["model"] == m.tag and body["language"] == m.manifest.language
        assert body["text"] == expected[m.tag][i], f"{m.config} clip {i}"
    assert expected[models[0].tag] != expected[models[1].tag]  # the models really say different things

    # One queue per model: each model's API batched exactly the segments sent to that model (every clip here
    # is one segment), so no batch held another model's audio; and batching did happen.
    after = httpx.get(multi_server.url + "/metrics", timeout=10).text
    sizes = []
    for m in models:
        method = "infer_" + m.tag.split(":")[0]  # each queue is named after its model
        total_after, count_after = batched_items(after, method)
        total_before, count_before = batched_items(before, method)
        sent = sum(1 for j, _ in jobs if j is m)
        assert total_after - total_before == sent, m.config
        sizes.append((total_after - total_before) / (count_after - count_before))
    assert max(sizes) > 1.0, f"no batch larger than 1: {sizes}"


@needs_speech
@pytest.mark.slow
def test_selection_errors_and_listing(multi_server: Server, models: list[Exported]) -> None:
    url, wav = multi_server.url, wav16(speech.hindi(speech.SENTENCES[0]))
    bpe, char, fast = models
    assert post(url, wav).json()["model"] == bpe.tag  # the first listed is the default
    assert post(url, wav, language="mr").json()["model"] == char.tag
    assert post(url, wav, language="hi").json()["model"] == bpe.tag
    assert post(url, wav, model=fast.tag).json()["model"] == fast.tag
    assert post(url, wav, model=fast.tag.split(":")[0], language="hi").json()["model"] == fast.tag

    error(post(url, wav, model="whisper-1"), 400, "unknown_model")
    assert all(m.tag.split(":")[0] in post(url, wav, model="x").json()["message"] for m in models)
    error(post(url, wav, language="en"), 400, "unknown_language")
    error(post(url, wav, model=char.tag, language="hi"), 400, "unknown_language")

    listed = httpx.get(url + "/v1/models", timeout=10).json()["data"]
    assert [(e["id"], e["tag"], e["language"], e["sample_rate"]) for e in listed] == [
        (m.tag.split(":")[0], m.tag, m.manifest.language, 16000) for m in models
    ]
    status = httpx.post(url + "/status", json={}, timeout=10).json()
    assert status["ready"] is True and status["model"] == bpe.tag
    assert [s["tag"] for s in status["models"]] == [m.tag for m in models]

    # the OpenAI-compatible route takes the same names, and its language too
    openai = httpx.post(
        url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", wav, "audio/wav")},
        data={"model": char.tag.split(":")[0], "response_format": "verbose_json"},
        timeout=60,
    ).json()
    assert openai["text"] == post(url, wav, model=char.tag).json()["text"] and openai["language"] == "marathi"
    refused = httpx.post(
        url + "/v1/audio/transcriptions", files={"file": ("a.wav", wav, "audio/wav")}, data={"model": "whisper-1"}
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_model"
