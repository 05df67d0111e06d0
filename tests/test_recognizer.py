"""The recognizer without a server: I/O names checked at start-up, providers, variants, threads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelMismatch
from service.manifest import Manifest
from service.recognition.recognizer import Recognizer, choose_providers, length_buckets
from tests import speech
from tests.conftest import Exported


def test_mismatched_names_refuse_to_start(tiny_bpe: Exported, tmp_path: Path) -> None:
    shutil.copy(tiny_bpe.directory / "model.onnx", tmp_path / "model.onnx")
    m = tiny_bpe.manifest
    graph = m.graph.model_copy(
        update={"inputs": [m.graph.inputs[0].model_copy(update={"name": "waveform"}), m.graph.inputs[1]]}
    )
    with pytest.raises(ModelMismatch) as info:
        Recognizer(tmp_path, m.model_copy(update={"graph": graph}), device="cpu")
    assert "waveform" in str(info.value) and "'audio'" in str(info.value)  # names both


def test_providers() -> None:
    assert choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", both, gpu=True)[0] == "CUDAExecutionProvider"
    # onnxruntime-gpu lists CUDA on any host: without a GPU, auto does not try it (and print its errors)
    assert choose_providers("auto", both, gpu=False) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", ["CPUExecutionProvider"])[0] == "CUDAExecutionProvider"


def test_demanded_gpu_is_not_ready_here(tiny_bpe: Exported) -> None:
    r = Recognizer(tiny_bpe.directory, tiny_bpe.manifest, device="cuda")
    assert r.providers == ["CPUExecutionProvider"] and "CUDA" in r.not_ready_reason


def test_variant_and_threads_settings(tiny_bpe: Exported, tmp_path: Path) -> None:
    """ASR_VARIANT picks a graph the export made; ASR_ORT_THREADS sizes the session. The optimised fp32
    graph gives the same tokens as model.onnx."""
    from export.variants import write_variant

    write_variant("optimized", tiny_bpe.directory / "model.onnx", tmp_path / "model.optimized.onnx")
    shutil.copy(tiny_bpe.directory / "model.onnx", tmp_path / "model.onnx")
    from service.manifest import Variant

    m = tiny_bpe.manifest
    manifest = m.model_copy(
        update={
            "variants": {
                "optimized": Variant(file="model.optimized.onnx", kind="optimized", note="test", parity=m.parity)
            }
        }
    )
    manifest.write(tmp_path)
    clips = [speech.noise(1.5, 1, 0.2), speech.noise(4.0, 2, 0.2)]
    plain = Recognizer(tmp_path, Manifest.read(tmp_path), device="cpu", threads=1).infer(clips)
    optimized = Recognizer(tmp_path, Manifest.read(tmp_path), device="cpu", threads=2, variant="optimized")
    assert optimized.session.get_session_options().intra_op_num_threads == 2
    assert [r.token_ids for r in optimized.infer(clips)] == [r.token_ids for r in plain]


def test_batch_equals_alone(tiny_char: Exported) -> None:
    r = Recognizer(tiny_char.directory, tiny_char.manifest, device="cpu")
    clips = [speech.noise(s, i, 0.2) for i, s in enumerate((0.2, 3.0, 7.5, 1.0))]
    together = r.run(clips)  # one zero-padded session run (what a GPU batch does)
    alone = [r.run([c])[0] for c in clips]
    assert [t.token_ids for t in together] == [a.token_ids for a in alone]
    assert all(np.allclose(t.probability, a.probability, atol=1e-4) for t, a in zip(together, alone, strict=True))


def test_length_buckets_bound_padding() -> None:
    lengths = [32_000, 480_000, 35_000, 470_000, 1, 160_000, 33_000]
    groups = length_buckets(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # each item once
    for g in groups:
        longest = max(lengths[i] for i in g)
        assert len(g) == 1 or longest * len(g) <= 1.25 * sum(lengths[i] for i in g)
    assert [sorted(g) for g in groups] == [[1, 3], [5], [0, 2, 6], [4]]
    assert length_buckets([]) == [] and length_buckets([5, 5, 5]) == [[0, 1, 2]]


@pytest.mark.parametrize("single_runs", [True, False])  # the CPU policy, and the GPU one (length buckets)
def test_mixed_lengths_keep_their_order(tiny_bpe: Exported, single_runs: bool) -> None:
    r = Recognizer(tiny_bpe.directory, tiny_bpe.manifest, device="cpu")
    assert r.single_runs  # on CPU
    r.single_runs = single_runs
    clips = [speech.noise(s, i, 0.2) for i, s in enumerate((0.5, 9.0, 0.6, 8.5, 3.0))]
    assert [x.token_ids for x in r.infer(clips)] == [r.run([c])[0].token_ids for c in clips]
