"""Settings are read once from ASR_* variables; bad values are refused with the variable's name."""

from __future__ import annotations

import dataclasses

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


def test_cpu_lanes_default_to_the_threads_then_the_cores() -> None:
    import os

    assert Settings.from_env({"ASR_CPU_LANES": "3"}).lanes == 3
    assert Settings.from_env({"ASR_ORT_THREADS": "2"}).lanes == 2
    assert Settings.from_env({}).lanes == len(os.sched_getaffinity(0))
    assert Settings.from_env({"ASR_CPU_LANES": "1", "ASR_ORT_THREADS": "4"}).lanes == 1
