"""Read, from the NeMo model itself, the facts the service needs: vocabulary, tokenizer, timing, limits."""

from __future__ import annotations

import math
from typing import Any

import torch

from export.frontend import LogMelFrontEnd
from export.graph import max_encoder_frames
from service.manifest import TokenizerSpec


class UnsupportedModel(ValueError):
    """The model uses something the artifact cannot describe faithfully."""


def vocabulary_and_tokenizer(model: Any) -> tuple[list[str], int, TokenizerSpec]:
    """(vocabulary indexed by token id, blank id, how ids become text) as NeMo's CTC decoding sees them."""
    vocabulary = [str(v) for v in model.decoder.vocabulary]
    blank_id = len(vocabulary)  # NeMo's CTC head puts the blank after the vocabulary
    if model.decoder.num_classes_with_blank != blank_id + 1:
        raise UnsupportedModel(
            f"decoder has {model.decoder.num_classes_with_blank} classes for {len(vocabulary)} tokens + blank"
        )
    punctuation = sorted(getattr(model.decoding, "supported_punctuation", None) or [])
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return vocabulary, blank_id, TokenizerSpec(kind="characters", punctuation=punctuation)

    sp = getattr(tokenizer, "tokenizer", None)
    if sp is None or not hasattr(sp, "is_control") or type(tokenizer).__name__ != "SentencePieceTokenizer":
        raise UnsupportedModel(f"tokenizer {type(tokenizer).__name__} is not supported (SentencePiece only)")
    if tokenizer.vocab_size != sp.get_piece_size():
        raise UnsupportedModel("NeMo special tokens added on top of the SentencePiece model are not supported")
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    if pieces != vocabulary:
        raise UnsupportedModel("the decoder's vocabulary is not the tokenizer's piece list")
    special: dict[int, Any] = {}
    for i in range(len(pieces)):
        if sp.is_control(i):
            special[i] = "control"
        elif sp.is_unknown(i):
            special[i] = "unknown"
        elif sp.is_byte(i):
            special[i] = "byte"
    return vocabulary, blank_id, TokenizerSpec(kind="sentencepiece", special=special, punctuation=punctuation)


def subsampling_factor(model: Any) -> int:
    factor = getattr(model.encoder, "subsampling_factor", None) or model.cfg.encoder.get("subsampling_factor", 1)
    return int(factor)


def encoder_length(model: Any, feature_frames: int) -> int:
    """Encoder output frames for an input of `feature_frames` features (NeMo's own length formula)."""
    pre = model.encoder.pre_encode
    if hasattr(pre, "_sampling_num"):
        from nemo.collections.asr.parts.submodules.subsampling import calc_length

        out = calc_length(
            torch.tensor([feature_frames]),
            all_paddings=pre._left_padding + pre._right_padding,
            kernel_size=pre._kernel_size,
            stride=pre._stride,
            ceil_mode=pre._ceil_mode,
            repeat_num=pre._sampling_num,
        )
        return int(out[0])
    return math.ceil(feature_frames / subsampling_factor(model))


def max_segment_samples(model: Any) -> int:
    """The longest input (in samples) whose encoder output fits the relative-position table."""
    limit = max_encoder_frames(model)
    if limit is None:
        raise UnsupportedModel("the encoder has no positional table to bound the segment length")
    frontend = LogMelFrontEnd(model.preprocessor.featurizer)

    def fits(samples: int) -> bool:
        frames = int(frontend.feature_lengths(torch.tensor([samples]))[0])
        return encoder_length(model, frames) <= limit

    low, high = 1, 1
    while fits(high):
        low, high = high, high * 2
    while high - low > 1:  # fits(low) and not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def raise_position_limit(model: Any, seconds: float, sample_rate: int) -> None:
    """Grow the relative-position table so that inputs of `seconds` fit (NeMo's set_max_audio_length)."""
    frontend = LogMelFrontEnd(model.preprocessor.featurizer)
    frames = int(frontend.feature_lengths(torch.tensor([math.ceil(seconds * sample_rate)]))[0])
    needed = encoder_length(model, frames)
    if needed > (max_encoder_frames(model) or 0):
        model.encoder.set_max_audio_length(needed)
