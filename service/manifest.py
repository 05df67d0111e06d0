"""The model artifact's manifest: written by export/, read by the service. Defined once, here.

A store entry holds `model.onnx` (+ optional variants) and `manifest.json` with this schema; a user can run
the graph with plain ONNX Runtime and turn its output into text with nothing but this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
SCHEMA_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    name: str
    dtype: str  # numpy dtype name: float32, int64
    shape: list[str]  # symbolic axes, e.g. ["batch", "samples"]


class GraphSpec(_Frozen):
    file: str  # relative to the store entry
    inputs: list[TensorSpec]  # audio [batch, samples] float32, audio_lengths [batch] int64
    outputs: list[TensorSpec]  # logprobs [batch, frames, vocab+1] float32, logprobs_lengths [batch] int64
    opset: int


class TokenizerSpec(_Frozen):
    """How token ids become text, exactly as NeMo's CTC decoding does it."""

    kind: Literal["characters", "sentencepiece"]
    # sentencepiece: pieces start a word with this marker; NeMo's decode turns it into a space.
    word_marker: str = "\u2581"
    # sentencepiece ids whose piece is not plain text: control (decodes to ""), unknown, byte (<0xNN>).
    special: dict[int, Literal["control", "unknown", "byte"]] = Field(default_factory=dict)
    unknown_surface: str = " \u2047 "  # what SentencePiece prints for <unk>
    # NeMo removes one whitespace character before each of these (extract_punctuation_from_vocab).
    punctuation: list[str] = Field(default_factory=list)

    @property
    def unknown_ids(self) -> list[int]:
        """Ids of the <unk> pieces."""
        return [i for i, kind in self.special.items() if kind == "unknown"]


class ParityReport(_Frozen):
    """What the export measured against NeMo before it registered the model."""

    clips: int
    identical_tokens: int  # clips whose greedy CTC token sequence equals NeMo transcribe()'s
    identical_text: int  # clips whose decoded text equals NeMo transcribe()'s text
    max_abs_logprob_diff: float  # graph vs NeMo forward, valid frames of every clip
    tolerance: float
    tie_frames: int  # frames whose argmax differs where NeMo's own top two are closer than tolerance
    ties_per_clip: list[int] = Field(default_factory=list)  # the same, clip by clip
    batch_max_abs_diff: float  # one zero-padded batch of all clips vs each clip alone
    batch_identical_tokens: bool
    total_audio_s: float
    lengths_s: list[float]


class Variant(_Frozen):
    file: str
    kind: Literal["optimized", "fp16", "int8"]
    note: str
    parity: ParityReport
    # Its speed on the export machine's CPU as a multiple of the fp32 graph's (> 1: faster), over the
    # verification clips (median of interleaved single runs), and that CPU; None where not measured (fp16 is
    # for GPUs).
    cpu_speed_vs_fp32: float | None = None
    measured_on: str = ""


class FrontEndSpec(_Frozen):
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    preemph: float | None
    mag_power: float
    log_zero_guard: list[str | float]
    normalize: str | None
    exact_pad: bool
    window_sum: float


class DecoderSpec(_Frozen):
    """Beam search defaults for this model, and its n-gram language model when it has one."""

    beam_width: int = 16
    lm_file: str = ""  # relative to the store entry: a KenLM model (ARPA, or KenLM's binary format)
    lm_alpha: float = 0.5  # weight of the LM's log-probability
    lm_beta: float = 1.0  # bonus per word
    lm_note: str = ""  # where the LM came from (the export's --lm-note)


def is_arpa(path: str | Path) -> bool:
    """An n-gram LM in ARPA text (the store entry's lm.arpa), else KenLM's binary format (lm.bin)."""
    with open(path, "rb") as f:
        return f.read(4096).lstrip().startswith(b"\\data\\")


class StreamingSpec(_Frozen):
    """Streaming recognition (NeMo's buffered CTC inference): two more graphs from the same export, both
    verified. Features come un-normalised along the stream; each buffer of features is normalised with its own
    statistics and runs through the encoder graph."""

    frontend_file: str  # audio [batch, samples], audio_lengths -> features [batch, n_mels, frames] (not normalised)
    encoder_file: str  # features [batch, n_mels, frames], feature_lengths -> logprobs, logprobs_lengths
    hop_length: int  # samples per feature frame
    n_fft: int  # the STFT's size: a frame needs n_fft // 2 samples on each side of its centre
    n_mels: int
    zero_level: float  # the feature value a buffer starts filled with (NeMo's FeatureFrameBufferer)
    chunk_s: float  # the export verified these chunk and buffer lengths against NeMo
    buffer_s: float
    verified: str  # what the export compared with NeMo, and the outcome


class TrainingSpec(_Frozen):
    """How long the utterances the model was trained on were, where the export could find it. The service shapes
    the segments of long audio like a typical one (docs/accuracy.md, "Long recordings")."""

    max_s: float  # the longest training utterance, seconds
    median_s: float | None = None  # the median one, where known (NeMo's configs record only the longest)
    source: str  # where the figures came from

    @property
    def typical_s(self) -> float:
        return self.median_s or self.max_s


class ItnSpec(_Frozen):
    """Inverse text normalisation (spoken -> written form: numbers, dates, money, times) for the model's
    language: the grammars of NeMo's nemo_text_processing, compiled at export into two OpenFst files beside the
    graph (service/recognition/written.py applies them; no grammar compiles when the service runs)."""

    language: str  # the grammars' language (nemo_text_processing's code)
    tagger_file: str  # spoken text (label = code point) -> tokens { ... } (the grammars' tokenize_and_classify)
    verbalizer_file: str  # one serialised token (UTF-8 bytes) -> its written form (the grammars' verbalize_final)
    alphabet: str  # the characters the tagger reads (a word with any other is left as spoken)
    source: str  # which package and version the grammars came from


class Manifest(_Frozen):
    schema_version: int = SCHEMA_VERSION
    name: str
    language: str  # ISO 639-1 where known, e.g. "hi"
    model_class: str  # NeMo class the graph was exported from
    sample_rate: int
    frame_shift_s: float  # seconds per output step: hop_length * subsampling / sample_rate
    subsampling_factor: int
    max_segment_s: float  # longest input the graph supports (relative-position table)
    max_segment_samples: int
    vocabulary: list[str]  # index = token id (blank excluded)
    blank_id: int
    tokenizer: TokenizerSpec
    graph: GraphSpec
    variants: dict[str, Variant] = Field(default_factory=dict)
    frontend: FrontEndSpec
    source: dict[str, str]
    versions: dict[str, str]
    parity: ParityReport
    # Non-empty for a demonstration model (e.g. the one trained here on synthetic speech, demo/): what it is
    # and is not. The service marks such models in /status and /v1/models.
    demo_notice: str = ""
    decoder: DecoderSpec = Field(default_factory=DecoderSpec)
    streaming: StreamingSpec | None = None  # absent: the export made no streaming graphs (older exports)
    training: TrainingSpec | None = None  # absent: unknown (random weights, older exports)
    itn: ItnSpec | None = None  # absent: no written form for this model (no grammars for its language)

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_FILE
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
