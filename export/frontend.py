"""NeMo's log-mel front end re-expressed with ONNX-friendly ops (no complex STFT, no ONNX `STFT` op).

Every constant is read from the model's own `FilterbankFeatures` (`model.preprocessor.featurizer`), never
from memory; the order of operations mirrors `FilterbankFeatures.forward` in NeMo 3.0
(nemo/collections/asr/parts/preprocessing/features.py) so that the graph computes what NeMo computes:

    pre-emphasis (masked to the valid samples) -> |STFT|^mag_power (centered, zero-padded) -> mel
    -> log(x + guard) -> per-feature normalisation over the valid frames -> zero the padded frames

With `exact_pad` NeMo instead pads (n_fft - hop) // 2 zeros on both sides *before* pre-emphasis, masks the
pre-emphasised signal at the original length in those padded coordinates (so the last pad-many samples of
each clip are zeroed: NeMo's quirk, reproduced) and runs an uncentred STFT.

The STFT is a strided 1-D convolution whose kernels are the window times the DFT basis: ONNX Runtime has
no CUDA kernel for the ONNX `STFT` op, while Conv runs everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

# NeMo's `CONSTANT` (features.py): added to the per-feature standard deviation.
NEMO_STD_GUARD = 1e-5


class UnsupportedFrontEnd(ValueError):
    """The model's featurizer uses an option this front end does not reproduce."""


def check_supported(fb: Any) -> None:
    if fb.frame_splicing != 1:
        raise UnsupportedFrontEnd(f"frame_splicing={fb.frame_splicing} is not supported (only 1)")
    if fb.normalize not in ("per_feature", None, False, ""):
        raise UnsupportedFrontEnd(f"normalize={fb.normalize!r} is not supported (per_feature or none)")
    if not fb.log:
        raise UnsupportedFrontEnd("log=False is not supported")
    if fb.window is None:
        raise UnsupportedFrontEnd("window='none' is not supported")


class LogMelFrontEnd(nn.Module):
    """Waveform [B, S] + lengths [B] -> NeMo log-mel features [B, n_mels, T] + feature lengths [B]."""

    def __init__(self, featurizer: Any) -> None:
        super().__init__()
        fb = featurizer
        check_supported(fb)
        self.n_fft: int = int(fb.n_fft)
        self.hop: int = int(fb.hop_length)
        self.exact_pad: bool = bool(fb.exact_pad)
        # exact_pad: NeMo pads (n_fft - hop) // 2 on both sides and runs the STFT uncentred;
        # otherwise torch.stft(center=True, pad_mode="constant") pads n_fft // 2 zeros on both sides.
        self.stft_pad: int = int(fb.stft_pad_amount) if self.exact_pad else self.n_fft // 2
        self.preemph: float | None = None if fb.preemph is None else float(fb.preemph)
        self.mag_power: float = float(fb.mag_power)
        self.guard_type: str = str(fb.log_zero_guard_type)
        guard = fb.log_zero_guard_value
        if isinstance(guard, str):
            guard = {"tiny": torch.finfo(torch.float32).tiny, "eps": torch.finfo(torch.float32).eps}[guard]
        self.log_guard: float = float(guard)
        self.normalize: bool = fb.normalize == "per_feature"
        self.pad_value: float = float(fb.pad_value)

        # torch.stft centres a window shorter than n_fft inside n_fft zeros.
        window = fb.window.detach().to(torch.float64).cpu()
        left = (self.n_fft - window.numel()) // 2
        padded = torch.zeros(self.n_fft, dtype=torch.float64)
        padded[left : left + window.numel()] = window
        n_bins = self.n_fft // 2 + 1
        n = torch.arange(self.n_fft, dtype=torch.float64)
        k = torch.arange(n_bins, dtype=torch.float64).unsqueeze(1)
        angle = 2.0 * math.pi * k * n / self.n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)], dim=0) * padded  # [2F, n_fft]
        self.register_buffer("stft_kernel", basis.to(torch.float32).unsqueeze(1), persistent=False)
        self.register_buffer("mel_basis", fb.fb.detach().to(torch.float32).cpu(), persistent=False)  # [1, M, F]
        self.n_bins: int = n_bins

    def feature_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """NeMo's `get_seq_len`: (samples + 2 * pad - n_fft) // hop, and 0 stays 0."""
        frames = torch.div(lengths + 2 * self.stft_pad - self.n_fft, self.hop, rounding_mode="floor")
        return torch.where(lengths == 0, torch.zeros_like(frames), frames).to(torch.int64)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat_len = self.feature_lengths(lengths)
        x = audio
        if self.exact_pad:  # pad first: pre-emphasis and its mask then work in padded coordinates
            x = nn.functional.pad(x, (self.stft_pad, self.stft_pad))
        if self.preemph is not None:
            valid = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
            x = torch.cat((x[:, :1], x[:, 1:] - self.preemph * x[:, :-1]), dim=1)
            x = x.masked_fill(~valid, 0.0)
        x = x.unsqueeze(1)
        if not self.exact_pad:
            x = nn.functional.pad(x, (self.stft_pad, self.stft_pad))
        kernel: torch.Tensor = self.stft_kernel  # type: ignore[assignment]
        spec = nn.functional.conv1d(x, kernel, stride=self.hop)  # [B, 2F, T]
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins :]
        x = torch.sqrt(re * re + im * im)
        if self.mag_power != 1.0:
            x = x.pow(self.mag_power)
        mel: torch.Tensor = self.mel_basis  # type: ignore[assignment]
        x = torch.matmul(mel, x)
        x = torch.log(x + self.log_guard) if self.guard_type == "add" else torch.log(torch.clamp(x, min=self.log_guard))

        steps = torch.arange(x.shape[2], device=x.device).unsqueeze(0)
        valid = (steps < feat_len.unsqueeze(1)).unsqueeze(1)  # [B, 1, T]
        if self.normalize:
            count = feat_len.to(x.dtype).unsqueeze(1)  # [B, 1]
            mean = torch.where(valid, x, torch.zeros_like(x)).sum(dim=2) / count
            centred = torch.where(valid, x - mean.unsqueeze(2), torch.zeros_like(x))
            std = torch.sqrt((centred * centred).sum(dim=2) / (count - 1.0))
            # NeMo: a single valid frame gives NaN (0/0), which it replaces by 0 before adding the guard.
            std = torch.where(torch.isnan(std), torch.zeros_like(std), std) + NEMO_STD_GUARD
            x = (x - mean.unsqueeze(2)) / std.unsqueeze(2)
        # No padding to a multiple of `pad_to`: transcribe() sets it to 0 too (it only adds masked frames).
        x = torch.where(valid, x, torch.full_like(x, self.pad_value))
        return x, feat_len


def featurizer_facts(featurizer: Any) -> dict[str, Any]:
    """The front-end constants, for the manifest (so a reader can see what the graph bakes in)."""
    fb = featurizer
    return {
        "n_fft": int(fb.n_fft),
        "win_length": int(fb.win_length),
        "hop_length": int(fb.hop_length),
        "n_mels": int(fb.nfilt),
        "preemph": None if fb.preemph is None else float(fb.preemph),
        "mag_power": float(fb.mag_power),
        "log_zero_guard": [str(fb.log_zero_guard_type), fb.log_zero_guard_value],
        "normalize": fb.normalize or None,
        "exact_pad": bool(fb.exact_pad),
        "window_sum": float(np.asarray(fb.window.detach().cpu()).sum()),
    }
