"""One ONNX graph from waveform to CTC log-probabilities: front end + NeMo encoder + NeMo CTC head."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.frontend import LogMelFrontEnd

INPUT_NAMES = ["audio", "audio_lengths"]
OUTPUT_NAMES = ["logprobs", "logprobs_lengths"]
OPSET = 17


class WaveformToLogProbs(nn.Module):
    """audio [B, S] float32 (zero-padded), audio_lengths [B] int64 -> logprobs [B, T, V+1], lengths [B]."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.frontend = LogMelFrontEnd(model.preprocessor.featurizer)
        self.encoder = model.encoder
        self.decoder = model.decoder

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, feature_lengths = self.frontend(audio, audio_lengths)
        # forward_for_export skips the length-dependent growth of the positional table (fixed at export).
        encoded, encoded_lengths = self.encoder.forward_for_export(features, feature_lengths)
        logprobs = self.decoder(encoder_output=encoded)
        # NeMo's MaskedConvSequential computes lengths with float `//`, which the TorchScript exporter
        # writes as a truncating cast: floor(-0.5) becomes 0, so an input with no feature frame would come
        # out one frame long. Every other length keeps a non-negative numerator and is exact.
        encoded_lengths = torch.where(feature_lengths == 0, torch.zeros_like(encoded_lengths), encoded_lengths)
        return logprobs, encoded_lengths.to(torch.int64)


# The self-attention kinds the export reproduces (NeMo ConformerEncoder.self_attention_model). Local attention
# (rel_pos_local_attn) traces, but its graph does not reproduce NeMo (measured: argmax differs on speech).
ATTENTION_TYPES = ("rel_pos", "abs_pos")


def max_encoder_frames(model: Any) -> int:
    """Longest encoder output the positional table covers, read from the table the graph bakes in:
    rel_pos builds positions L-1 .. -(L-1) (2L - 1 rows); abs_pos positions 0 .. L-1 (L rows)."""
    kind = model.encoder._cfg.get("self_attention_model", "rel_pos")
    rows = int(model.encoder.pos_enc.pe.shape[1])
    if kind == "rel_pos":
        return (rows + 1) // 2
    if kind == "abs_pos":
        return rows
    raise ValueError(f"self_attention_model={kind!r} has no length bound we know")


@contextlib.contextmanager
def _nemo_export_mode(model: Any) -> Iterator[None]:
    """What NeMo's own Exportable does around tracing: no type checks, inference mode, masks as in eval."""
    from nemo.core.classes.common import typecheck

    typecheck.set_typecheck_enabled(enabled=False)
    try:
        with torch.inference_mode(False), torch.no_grad():
            yield
    finally:
        typecheck.set_typecheck_enabled(enabled=True)


def example_audio(sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two items of different lengths, so that no shape or length gets baked in as a constant."""
    n = sample_rate * 2
    return torch.randn(2, n) * 0.1, torch.tensor([n, n * 3 // 4], dtype=torch.int64)


def trace(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, axes: dict[str, dict[int, str]]) -> None:
    """The legacy TorchScript exporter (NeMo's own choice for Conformers), inside _nemo_export_mode. `axes` names
    the inputs, then the outputs, in order, with their dynamic axes."""
    names = list(axes)
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=names[: len(args)],
        output_names=names[len(args) :],
        dynamic_axes=axes,
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )


def export_onnx(model: Any, path: Path, sample_rate: int) -> None:
    """Trace the wrapper: waveform in, log-probabilities out."""
    model.eval()
    wrapper = WaveformToLogProbs(model).eval()
    axes = {
        INPUT_NAMES[0]: {0: "batch", 1: "samples"},
        INPUT_NAMES[1]: {0: "batch"},
        OUTPUT_NAMES[0]: {0: "batch", 1: "frames"},
        OUTPUT_NAMES[1]: {0: "batch"},
    }
    with _nemo_export_mode(model):
        trace(wrapper, example_audio(sample_rate), path, axes)
