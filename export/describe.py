"""Read, from the NeMo model itself, the facts the service needs: vocabulary, tokenizer, timing, limits."""

from __future__ import annotations

import math
from typing import Any

import torch

from export.frontend import LogMelFrontEnd, UnsupportedFrontEnd, check_supported
from export.graph import ATTENTION_TYPES, max_encoder_frames
from service.manifest import TokenizerSpec


class UnsupportedModel(ValueError):
    """The model uses something the artifact cannot describe faithfully."""


def check_exportable(model: Any) -> None:
    """Refuse, before anything is traced, what the graph cannot reproduce: encoders other than Conformer /
    FastConformer (Citrinet, QuartzNet, Squeezeformer, ...), attention kinds without a known length bound,
    front ends other than NeMo's log-mel FilterbankFeatures (MFCC, torchaudio features) and their options
    we do not reproduce, CTC heads other than ConvASRDecoder."""
    from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor, ConformerEncoder, ConvASRDecoder
    from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures

    encoder = model.encoder
    if type(encoder) is not ConformerEncoder:
        raise UnsupportedModel(
            f"encoder {type(encoder).__name__} is not supported: the export reproduces Conformer and FastConformer "
            "encoders (ConformerEncoder) only"
        )
    kind = encoder._cfg.get("self_attention_model", "rel_pos")
    if kind not in ATTENTION_TYPES:
        raise UnsupportedModel(
            f"self_attention_model={kind!r} is not supported (supported: {', '.join(ATTENTION_TYPES)}); local "
            "attention does not reproduce NeMo in the exported graph"
        )
    preprocessor = model.preprocessor
    if (
        not isinstance(preprocessor, AudioToMelSpectrogramPreprocessor)
        or type(preprocessor.featurizer) is not FilterbankFeatures
    ):
        raise UnsupportedFrontEnd(
            f"front end {type(preprocessor).__name__} ({type(getattr(preprocessor, 'featurizer', None)).__name__}) "
            "is not supported: the export reproduces NeMo's log-mel AudioToMelSpectrogramPreprocessor "
            "(FilterbankFeatures) only"
        )
    check_supported(preprocessor.featurizer)
    if not isinstance(model.decoder, ConvASRDecoder):
        raise UnsupportedModel(f"CTC head {type(model.decoder).__name__} is not supported (ConvASRDecoder only)")


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


def tensor_frames(model: Any, samples: int) -> int:
    """Encoder frames of the *tensor* for an input of `samples` (what the positional table must cover).
    One more feature frame than NeMo's valid length: the STFT's last window (over the zero padding) is in the
    tensor, masked out of the length; subsampled, that can make the tensor one frame longer than its length."""
    frontend = LogMelFrontEnd(model.preprocessor.featurizer)
    valid = int(frontend.feature_lengths(torch.tensor([samples]))[0])
    return encoder_length(model, valid + 1)


def max_segment_samples(model: Any) -> int:
    """The longest input (in samples) whose encoder tensor fits the positional table baked into the graph."""
    limit = max_encoder_frames(model)

    def fits(samples: int) -> bool:
        return tensor_frames(model, samples) <= limit

    low, high = 1, 1
    while fits(high):
        low, high = high, high * 2
    while high - low > 1:  # fits(low) and not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def raise_position_limit(model: Any, seconds: float, sample_rate: int) -> None:
    """Grow the positional table so that inputs of `seconds` fit (NeMo's set_max_audio_length)."""
    needed = tensor_frames(model, math.ceil(seconds * sample_rate))
    if needed > max_encoder_frames(model):
        model.encoder.set_max_audio_length(needed)
