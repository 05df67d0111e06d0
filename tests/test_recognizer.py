"""The recognizer without a server: I/O names checked at start-up, providers, variants, threads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import ModelMismatch
from service.manifest import Manifest
from service.recognition.device import (
    CPU,
    CUDA,
    TENSORRT,
    TENSORRT_PACKAGE,
    DeviceOptions,
    Shapes,
    choose_providers,
    nvidia_gpu_present,
    preload_tensorrt,
    provider_options,
)
from service.recognition.recognizer import GREEDY_HEAD, Recognizer, length_buckets
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
    # TensorRT goes before CUDA wherever CUDA would be used, and nowhere else
    assert choose_providers("cuda", both, tensorrt=True) == [TENSORRT, CUDA, CPU]
    assert choose_providers("auto", both, gpu=True, tensorrt=True) == [TENSORRT, CUDA, CPU]
    assert choose_providers("auto", both, gpu=False, tensorrt=True) == [CPU]
    assert choose_providers("cpu", both, tensorrt=True) == [CPU]


@pytest.mark.skipif(nvidia_gpu_present(), reason="a GPU is here: the demanded GPU loads (server tests hide it)")
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


@pytest.mark.parametrize("config", ["tiny_bpe", "tiny_char"])
def test_lanes_give_what_solo_runs_give(config: str, request: pytest.FixtureRequest) -> None:
    """Segments in lanes (the one-thread session, side by side) and solo: the same tokens and frames, the same
    probabilities within 1e-5 (thread counts may change float sums in the last bits), for greedy results and
    beam search's log-probabilities; the batch's order kept."""
    model: Exported = request.getfixturevalue(config)
    solo = Recognizer(model.directory, model.manifest, device="cpu")
    lanes = Recognizer(model.directory, model.manifest, device="cpu", lanes=2)
    assert lanes.lane_session is not None and lanes.cores is not None
    clips = [speech.noise(s, i, 0.2) for i, s in enumerate((0.5, 9.0, 0.6, 8.5, 3.0, 4.0))]
    clips[1] = speech.hindi(speech.SENTENCES[0])
    got, want = lanes.infer(clips), [solo.run([c])[0] for c in clips]
    assert lanes.cores.lane_runs >= 4  # all but perhaps the last
    for g, w in zip(got, want, strict=True):
        assert (g.token_ids, g.first_frame, g.last_frame, g.frames) == (
            w.token_ids,
            w.first_frame,
            w.last_frame,
            w.frames,
        )
        assert np.allclose(g.probability, w.probability, atol=1e-5)
    got_lp, want_lp = lanes.logprobs(clips), [solo.forward([c])[0] for c in clips]
    assert all(g.shape == w.shape and np.allclose(g, w, atol=1e-5) for g, w in zip(got_lp, want_lp, strict=True))
    assert lanes.infer([]) == [] and lanes.logprobs([]) == []  # as solo: an empty batch is no error


@pytest.mark.parametrize(("lane_run_s", "kept"), [(0.05, True), (0.4, False)])
def test_lanes_are_kept_only_where_they_pay(tiny_bpe: Exported, lane_run_s: float, kept: bool) -> None:
    """Calibration times two clips solo one after another against side by side in the lanes: lanes that finish
    them together in half the time are kept (gain ~2), lanes whose runs take 8x a solo run are dropped (gain
    ~0.25), and the recognizer runs either way. (Runs are stand-ins that sleep: the margins around the 5 % rule
    hold on a loaded machine.)"""
    import time

    r = Recognizer(tiny_bpe.directory, tiny_bpe.manifest, device="cpu", lanes=2)
    real = r.forward

    def timed(items: Any, session: Any = None) -> Any:
        time.sleep(0.05 if session is None else lane_run_s)
        return real(items, session) if session is not None else real(items)

    r.forward = timed  # type: ignore[method-assign]
    r.calibrate_lanes(seconds=0.5, rounds=1)
    r.forward = real  # type: ignore[method-assign]
    assert (r.lane_session is not None) is kept and (r.lanes == 2) is kept
    assert (r.lane_gain > 1.5) if kept else (r.lane_gain < 0.5)
    clip = speech.noise(2.0, 0, 0.2)
    assert r.infer([clip, clip])[0].token_ids == r.run([clip])[0].token_ids  # runs either way


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


def test_provider_options() -> None:
    """TF32 off unless allowed (ONNX Runtime's default is on); the cuDNN search; TensorRT's precision, cache and
    one shape profile from the smallest to the largest bucket and class."""
    shapes = Shapes([16000, 64000, 480000], 16)
    names = ["audio", "audio_lengths"]
    cuda, cpu = provider_options([CUDA, CPU], DeviceOptions(), names, shapes)
    assert cuda == {"use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"} and cpu == {}
    (cuda,) = provider_options([CUDA], DeviceOptions(tf32=True, cudnn_search="heuristic"), names, shapes)
    assert cuda == {"use_tf32": "1", "cudnn_conv_algo_search": "HEURISTIC"}
    trt, _, _ = provider_options(
        [TENSORRT, CUDA, CPU], DeviceOptions(tensorrt="fp16", tensorrt_cache="/cache"), names, shapes
    )
    assert trt["trt_fp16_enable"] == "1" and trt["trt_engine_cache_enable"] == "1"
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == "/cache"
    assert trt["trt_profile_min_shapes"] == "audio:1x16000,audio_lengths:1"
    assert trt["trt_profile_opt_shapes"] == "audio:4x64000,audio_lengths:4"
    assert trt["trt_profile_max_shapes"] == "audio:16x480000,audio_lengths:16"
    (trt,) = provider_options([TENSORRT], DeviceOptions(tensorrt="fp32"), names, None)
    assert trt == {"trt_fp16_enable": "0"}  # no cache directory, no buckets: TensorRT's own defaults


def test_shapes() -> None:
    """Buckets below the model's longest segment, that segment last; classes 1, 2, 4, ... up to the batch's
    largest; items grouped by bucket, at most the largest class per run, every index once."""
    shapes = Shapes.for_model((1, 2, 4, 8, 15, 30, 60), 20 * 16000, 16000, 12)
    assert shapes.buckets == [16000, 32000, 64000, 128000, 240000, 320000]
    assert shapes.classes == [1, 2, 4, 8, 12]
    widths = [shapes.width(n) for n in (1, 16000, 16001, 319999, 320000, 320001)]
    assert widths == [16000, 16000, 32000, 320000, 320000, 320001]
    assert [shapes.rows(n) for n in (1, 2, 3, 5, 9, 12, 13)] == [1, 2, 4, 8, 12, 12, 13]
    lengths = [100, 300000, 20000, 15000, 250000, *([1000] * 14)]
    groups = shapes.groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert groups[:3] == [[1, 4], [2], [0, 3, *range(5, 15)]] and groups[3] == [15, 16, 17, 18]
    assert len(shapes.all()) == 6 * 5 and (12, 320000) in shapes.all()


def test_greedy_head_file_is_what_the_builder_writes() -> None:
    """The shipped graph is export/greedy_head.py's, and it is numpy's argmax (lowest id on a tie) and max."""
    import onnxruntime as ort

    from export.greedy_head import build

    assert GREEDY_HEAD.read_bytes() == build()
    head = ort.InferenceSession(str(GREEDY_HEAD), providers=[CPU])
    x = np.random.default_rng(0).standard_normal((3, 7, 11)).astype(np.float32)
    x[0, 0, [2, 9]] = 50.0  # a tie
    ids, best = head.run(None, {"logprobs": x})
    assert ids.dtype == np.int64 and ids[0, 0] == 2
    assert np.array_equal(ids, x.argmax(-1)) and np.array_equal(best, x.max(-1))


@pytest.mark.parametrize("config", ["tiny_bpe", "tiny_char"])
def test_gpu_code_paths_equal_the_cpu_path(config: str, request: pytest.FixtureRequest) -> None:
    """The GPU's way of running (segments of one bucket in a run padded to a fixed bucket and batch class,
    log-probabilities kept where the session put them by I/O binding, greedy decoding by the greedy head)
    forced on the CPU provider: the same tokens, frames and word timing as single unpadded runs, probabilities
    within 1e-4, every run on a shape warm-up ran."""
    model: Exported = request.getfixturevalue(config)
    plain = Recognizer(model.directory, model.manifest, device="cpu")
    options = DeviceOptions(buckets_s=(1.0, 2.0, 4.0), batch_max=4)
    gpu_like = Recognizer(
        model.directory, model.manifest, "cpu", gpu=options, segment_samples=10 * 16000, shapes=True, device_greedy=True
    )
    assert gpu_like.head is not None and gpu_like.shapes is not None and plain.head is None
    gpu_like.single_runs = False  # as on a GPU: items of one bucket share a run
    seen: list[tuple[int, int]] = []
    padded = gpu_like._padded

    def record(batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        audio, lengths = padded(batch)
        seen.append(audio.shape)
        assert lengths.shape == (audio.shape[0],)
        return audio, lengths

    gpu_like._padded = record  # type: ignore[method-assign]
    gpu_like.warmup()
    warmed = set(seen)
    assert warmed == set(gpu_like.shapes.all()) and len(warmed) == 3 * 4  # 1, 2, 4, 10 s x 1, 2, 4 rows
    seen.clear()
    clips = [speech.noise(s, i, 0.2) for i, s in enumerate((0.5, 9.0, 0.6, 3.5, 3.0, 1.5, 0.9, 0.4, 0.3, 0.8))]
    clips[3] = speech.hindi(speech.SENTENCES[0])[: 3 * 16000]
    alone = plain.infer(clips)
    together = gpu_like.infer(clips)
    assert set(seen) <= warmed and len(seen) < len(clips)  # shared runs, on warmed shapes only
    for a, b in zip(alone, together, strict=True):
        assert (a.token_ids, a.first_frame, a.last_frame) == (b.token_ids, b.first_frame, b.last_frame)
        assert a.frames == b.frames
        assert np.allclose(a.probability, b.probability, atol=1e-4)
    # beam search's log-probabilities through the same padding
    pairs = zip(plain.logprobs(clips), gpu_like.logprobs(clips), strict=True)
    assert max(float(np.abs(x - y).max()) for x, y in pairs) < 1e-4


@pytest.mark.skipif(nvidia_gpu_present(), reason="a GPU is here: TensorRT may load (gpu_check runs it)")
def test_tensorrt_demanded_without_a_gpu(tiny_bpe: Exported) -> None:
    """ASR_TENSORRT with ASR_DEVICE=cuda on a host without a GPU: not ready, and the reason says what is missing."""
    r = Recognizer(tiny_bpe.directory, tiny_bpe.manifest, device="cuda", gpu=DeviceOptions(tensorrt="fp16"))
    assert r.providers == [CPU] and r.not_ready_reason and not r.on_gpu
    assert r.head is None and r.shapes is None and r.single_runs  # the CPU path, as without the settings
    # ASR_DEVICE=cuda is what is not met first: the reason names it (TensorRT's own reason needs a GPU to arise)
    assert r.not_ready_reason.startswith("ASR_DEVICE=cuda but ONNX Runtime runs on") and "CUDA" in r.not_ready_reason
    # without TensorRT's libraries the preload says so (the service logs it) instead of failing; with them, ""
    import importlib.util

    installed = importlib.util.find_spec("tensorrt_libs") is not None
    assert preload_tensorrt() == "" if installed else TENSORRT_PACKAGE in preload_tensorrt()


def test_stream_buffers_alone_and_stacked(tiny_bpe: Exported) -> None:
    """The streaming encoder's buffers run one by one on the CPU and stacked in one run on a GPU: the same best
    tokens and log-probabilities either way; a model without streaming graphs answers empty results."""
    r = Recognizer(tiny_bpe.directory, tiny_bpe.manifest, device="cpu", streaming=True)
    rng = np.random.default_rng(1)
    buffers = [rng.standard_normal((80, 400)).astype(np.float32) for _ in range(3)]
    alone = r.stream(buffers)
    r.single_runs = False
    stacked = r.stream(buffers)
    for a, b in zip(alone, stacked, strict=True):
        assert a.shape == b.shape == (100, 2)
        assert np.array_equal(a[:, 0], b[:, 0]) and np.allclose(a[:, 1], b[:, 1], atol=1e-4)
    assert np.all(alone[0][:, 1] <= 0) and alone[0][:, 0].max() <= tiny_bpe.manifest.blank_id
    off = Recognizer(tiny_bpe.directory, tiny_bpe.manifest, device="cpu")
    assert off.stream_session is None and [x.shape for x in off.stream(buffers)] == [(0, 2)] * 3
