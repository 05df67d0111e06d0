"""Settings are read once from ASR_* variables; bad values are refused with the variable's name."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from service.settings import Settings, SettingsError


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert s == Settings() and s.model == "stt_hi_conformer_ctc_medium:latest" and s.formats == ()
    s = Settings.from_env(
        {
            "ASR_MAX_DURATION_S": "10",
            "ASR_FORMATS": "wav, flac",
            "ASR_REQUIRE_MONO": "true",
            "ASR_BATCH_MAX_SIZE": "8",
            "ASR_DEVICE": "cpu",
        }
    )
    assert s.max_duration_s == 10.0 and s.formats == ("WAV", "FLAC") and s.require_mono and s.batch_max_size == 8
    assert s.model_tags == ("stt_hi_conformer_ctc_medium:latest",)


def test_several_models_keep_their_order_and_case() -> None:
    s = Settings.from_env({"ASR_MODELS": " hi_model:v1 ,en_Model:latest,, ", "ASR_MODEL": "ignored:v0"})
    assert s.model_tags == ("hi_model:v1", "en_Model:latest")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("ASR_MAX_UPLOAD_MB", "lots"),
        ("ASR_DEVICE", "tpu"),
        ("ASR_REQUIRE_MONO", "maybe"),
        ("ASR_MIN_DURATION_S", "20"),
        ("ASR_VARIANT", "int4"),
        ("ASR_BATCH_MAX_SIZE", "1"),
        ("ASR_TIMEOUT_S", "0"),
        ("ASR_TIMEOUT_S", "-5"),
        ("ASR_MAX_CONCURRENCY", "0"),
        ("ASR_MAX_UPLOAD_MB", "-1"),
        ("ASR_MAX_UPLOAD_MB", "nan"),
        ("ASR_MAX_DURATION_S", "inf"),
        ("ASR_MAX_DECODED_MB", "0"),
        ("ASR_SEGMENT_S", "-30"),
        ("ASR_MIN_PAUSE_S", "0"),
        ("ASR_SEGMENTER", "neural"),
        ("ASR_SEGMENT_TARGET", "short"),
        ("ASR_SEGMENT_TARGET", "0"),
        ("ASR_SEGMENT_TARGET", "nan"),
        ("ASR_VAD_PAD_S", "-0.1"),
        ("ASR_BATCH_MAX_LATENCY_MS", "0"),
        ("ASR_ORT_THREADS", "-1"),
        ("ASR_CPU_LANES", "-2"),
        ("ASR_CPU_LANES", "two"),
        ("ASR_REQUIRE_SAMPLE_RATE", "-16000"),
        ("ASR_MODELS", "a:v1, b c:v2"),
    ],
)
def test_bad_values(var: str, value: str) -> None:
    """Refused with one line that names the variable the user wrote."""
    env = {var: value} if var == "ASR_MAX_DURATION_S" else {var: value, "ASR_MAX_DURATION_S": "10"}
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(f"{var}=") and "\n" not in str(info.value), str(info.value)


def test_empty_values_keep_the_defaults() -> None:
    assert Settings.from_env({"ASR_MODEL": "", "ASR_TIMEOUT_S": "  "}) == Settings()


def test_every_setting_is_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for f in dataclasses.fields(Settings):
        assert f"`ASR_{f.name.upper()}`" in readme, f"ASR_{f.name.upper()} is not documented"


def test_the_segment_target_follows_the_models_training_lengths() -> None:
    """ASR_SEGMENT_TARGET in a model's samples: `model` its manifest's median training utterance, else the
    longest (none known: no target, segments grow to ASR_SEGMENT_S), seconds as given, `off` none."""
    from types import SimpleNamespace

    from service.catalog import target_samples
    from service.manifest import TrainingSpec

    def served(training: TrainingSpec | None, rate: int = 16000) -> Any:
        return SimpleNamespace(manifest=SimpleNamespace(training=training, sample_rate=rate))

    trained = served(TrainingSpec(max_s=21.74, median_s=3.91, source="test"), 8000)
    assert target_samples(trained, Settings.from_env({}).segment_target) == round(3.91 * 8000)
    assert target_samples(served(TrainingSpec(max_s=16.7, source="NeMo")), "model") == round(16.7 * 16000)
    assert target_samples(served(None), "model") == 0
    assert target_samples(trained, Settings.from_env({"ASR_SEGMENT_TARGET": "12.5"}).segment_target) == 100000
    assert target_samples(trained, Settings.from_env({"ASR_SEGMENT_TARGET": "off"}).segment_target) == 0


def test_cpu_lanes_default_to_the_threads_then_the_cores() -> None:
    import os

    assert Settings.from_env({"ASR_CPU_LANES": "3"}).lanes == 3
    assert Settings.from_env({"ASR_ORT_THREADS": "2"}).lanes == 2
    assert Settings.from_env({}).lanes == len(os.sched_getaffinity(0))
    assert Settings.from_env({"ASR_CPU_LANES": "1", "ASR_ORT_THREADS": "4"}).lanes == 1


def test_gpu_settings_are_parsed_and_reach_the_sessions_options() -> None:
    """ASR_BUCKETS_S, ASR_TENSORRT, ASR_TENSORRT_CACHE, ASR_ALLOW_TF32, ASR_CUDNN_SEARCH and ASR_BATCH_MAX_SIZE
    as the recognizer's sessions get them (Settings.device_options)."""
    import os

    s = Settings.from_env(
        {
            "ASR_DEVICE": "cuda",
            "ASR_BUCKETS_S": "2, 5,10.5",
            "ASR_TENSORRT": "fp16",
            "ASR_TENSORRT_CACHE": "~/trt",
            "ASR_ALLOW_TF32": "yes",
            "ASR_CUDNN_SEARCH": "heuristic",
            "ASR_BATCH_MAX_SIZE": "32",
        }
    )
    options = s.device_options
    assert (options.buckets_s, options.tensorrt, options.tf32, options.cudnn_search, options.batch_max) == (
        (2.0, 5.0, 10.5),
        "fp16",
        True,
        "heuristic",
        32,
    )
    assert options.tensorrt_cache == os.path.expanduser("~/trt") and not options.tensorrt_cache.startswith("~")
    off = Settings.from_env({"ASR_BUCKETS_S": "off"}).device_options
    assert off.buckets_s == () and off.tensorrt == "" and off.tf32 is False and off.cudnn_search == "exhaustive"
    for var, value in (
        ("ASR_BUCKETS_S", "1,x"),
        ("ASR_BUCKETS_S", "0,2"),
        ("ASR_TENSORRT", "int8"),
        ("ASR_ALLOW_TF32", "sometimes"),
        ("ASR_CUDNN_SEARCH", "fastest"),
    ):
        with pytest.raises(SettingsError, match="^" + re.escape(var) + "="):
            Settings.from_env({var: value, "ASR_DEVICE": "cuda"})
    with pytest.raises(SettingsError, match=r"^ASR_TENSORRT="):  # TensorRT needs a GPU
        Settings.from_env({"ASR_TENSORRT": "fp32", "ASR_DEVICE": "cpu"})


@pytest.mark.parametrize("gpu", [False, True])
def test_the_host_decides_entry_workers_and_lanes(monkeypatch: pytest.MonkeyPatch, gpu: bool) -> None:
    """Where an NVIDIA GPU is (nvidia_gpu_present, patched here), ASR_ENTRY_WORKERS defaults to one entry process per
    two cores (at most 8) and the recognizer runs one batch at a time (no CPU lanes); elsewhere, or with
    ASR_DEVICE=cpu, one entry process and the lanes. An explicit ASR_ENTRY_WORKERS always wins."""
    import os

    from service import settings

    monkeypatch.setattr(settings, "nvidia_gpu_present", lambda: gpu)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)))
    auto = Settings.from_env({"ASR_CPU_LANES": "3"})
    assert auto.entry_processes() == (6 if gpu else 1)
    assert auto.recognizer_lanes() == (1 if gpu else 3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(40)))
    assert Settings.from_env({}).entry_processes() == (8 if gpu else 1)
    cpu = Settings.from_env({"ASR_DEVICE": "cpu", "ASR_CPU_LANES": "3"})
    assert (cpu.entry_processes(), cpu.recognizer_lanes()) == (1, 3)
    assert Settings.from_env({"ASR_ENTRY_WORKERS": "3"}).entry_processes() == 3
