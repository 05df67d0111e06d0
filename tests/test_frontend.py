"""The graph's front end (export/frontend.py) against NeMo's own FilterbankFeatures, over the options NeMo
models use: window, n_fft != win_length, mag_power, log guard type and value, normalisation, exact_pad,
pre-emphasis, 64/80/128 mels. Each case runs a zero-padded batch of three lengths (padding must not leak)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from export.frontend import LogMelFrontEnd, UnsupportedFrontEnd

BASE: dict[str, Any] = dict(
    sample_rate=16000,
    n_window_size=400,
    n_window_stride=160,
    window="hann",
    normalize="per_feature",
    n_fft=512,
    preemph=0.97,
    nfilt=80,
    log=True,
    log_zero_guard_type="add",
    log_zero_guard_value=2**-24,
    dither=0.0,
    pad_to=0,
    exact_pad=False,
    mag_power=2.0,
)
CASES = {
    "stt_hi_conformer_ctc_medium": {},
    "64 mels": {"nfilt": 64},
    "128 mels": {"nfilt": 128},
    "hamming": {"window": "hamming"},
    "blackman": {"window": "blackman"},
    "bartlett": {"window": "bartlett"},
    "n_fft = win_length": {"n_window_size": 512},
    "n_fft from win_length": {"n_fft": None, "n_window_size": 320},
    "magnitude (mag_power 1)": {"mag_power": 1.0},
    "clamp guard": {"log_zero_guard_type": "clamp", "log_zero_guard_value": 1e-5},
    "guard tiny": {"log_zero_guard_value": "tiny"},
    "guard eps": {"log_zero_guard_type": "clamp", "log_zero_guard_value": "eps"},
    "no normalisation": {"normalize": None},
    "no pre-emphasis": {"preemph": None},
    "exact_pad": {"exact_pad": True},
    "exact_pad, no pre-emphasis, 128 mels": {"exact_pad": True, "preemph": None, "nfilt": 128},
    "exact_pad, hamming, clamp": {"exact_pad": True, "window": "hamming", "log_zero_guard_type": "clamp"},
}


def batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        t = np.arange(n) / 16000
        audio[i, :n] = 0.2 * np.sin(2 * np.pi * (200 + 300 * i) * t) + 0.05 * rng.standard_normal(n)
    return torch.from_numpy(audio), torch.tensor(lengths, dtype=torch.int64)


@pytest.mark.parametrize("case", sorted(CASES))
def test_features_equal_nemo(case: str) -> None:
    from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures

    fb = FilterbankFeatures(**{**BASE, **CASES[case]}).eval()
    ours = LogMelFrontEnd(fb).eval()
    x, lengths = batch([16000, 7777, 24321])
    with torch.no_grad():
        ref, ref_len = fb(x, lengths)
        got, got_len = ours(x, lengths)
    assert got_len.tolist() == ref_len.tolist()
    assert got.shape[:2] == ref.shape[:2]
    frames = min(got.shape[-1], ref.shape[-1])
    for i, n in enumerate(ref_len.tolist()):  # valid frames equal, padded frames NeMo's pad value
        diff = float((got[i, :, :n] - ref[i, :, :n]).abs().max())
        assert diff < 5e-4, f"{case}: item {i} max |Δ feature| {diff:.2e}"
        assert torch.equal(got[i, :, n:frames], ref[i, :, n:frames])


@pytest.mark.parametrize(
    ("options", "message"),
    [({"normalize": "all_features"}, "normalize"), ({"frame_splicing": 3}, "frame_splicing"), ({"log": False}, "log")],
)
def test_options_we_do_not_reproduce_are_refused(options: dict[str, Any], message: str) -> None:
    from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures

    with pytest.raises(UnsupportedFrontEnd, match=message):
        LogMelFrontEnd(FilterbankFeatures(**{**BASE, **options}))
