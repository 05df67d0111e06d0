"""The export, step by step: graph -> verification against NeMo -> manifest -> (variants) -> store."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.describe import (
    check_exportable,
    max_segment_samples,
    raise_position_limit,
    subsampling_factor,
    vocabulary_and_tokenizer,
)
from export.frontend import featurizer_facts
from export.graph import INPUT_NAMES, OPSET, OUTPUT_NAMES, export_onnx
from export.progress import progress
from export.runtime import ort_runner
from export.sources import LoadedModel
from export.verify import FP32_TOLERANCE, Clip, check_parity, nemo_reference, verification_clips
from service.manifest import (
    DecoderSpec,
    FrontEndSpec,
    GraphSpec,
    Manifest,
    ParityReport,
    TensorSpec,
    TokenizerSpec,
    TrainingSpec,
    Variant,
    is_arpa,
)
from service.recognition.tokens import Detokenizer

GRAPH_FILE = "model.onnx"


@dataclass
class Options:
    name: str | None = None
    max_segment_s: float | None = None
    verify_audio: Sequence[Path] = ()
    tolerance: float = FP32_TOLERANCE
    variants: Sequence[str] = ()
    workdir: Path | None = None
    register: bool = True
    clips: list[Clip] = field(default_factory=list)  # replaces the default verification set (tests)
    decoder: DecoderOptions | None = None  # beam search defaults and an n-gram LM to pack with the model
    streaming: bool = True  # the streaming graphs (export/streaming.py), verified against NeMo
    train_max_s: float | None = None  # the longest training utterance, where the model does not say it
    itn: bool = True  # the written form's grammars for the model's language, where nemo_text_processing has them


@dataclass(frozen=True)
class DecoderOptions:
    lm: Path | None = None  # a KenLM model: ARPA (text) or KenLM's binary format
    lm_alpha: float = 0.5
    lm_beta: float = 1.0
    beam_width: int = 16
    lm_note: str = ""


def pack_decoder(options: DecoderOptions, vocab: tuple[list[str], int, Any], out_dir: Path) -> DecoderSpec:
    """The manifest's decoder entry; the LM copied beside the graph as lm.arpa or lm.bin, after KenLM has read
    it and scored a sentence of this vocabulary's pieces (an LM KenLM cannot read fails the export, not the
    service)."""
    if options.lm is None:
        return DecoderSpec(beam_width=options.beam_width)
    file = "lm.arpa" if is_arpa(options.lm) else "lm.bin"
    shutil.copy2(options.lm, out_dir / file)
    vocabulary, _, tokenizer = vocab
    try:
        import kenlm

        words = [p.replace(tokenizer.word_marker, "") for p in vocabulary[:8]]
        kenlm.Model(str(out_dir / file)).score(" ".join(w for w in words if w.strip()), bos=True, eos=True)
    except Exception as exc:
        raise LMError(f"the language model {options.lm} cannot be used: {exc}") from exc
    size_mb = (out_dir / file).stat().st_size / 1e6
    progress(f"language model packed: {file}, {size_mb:.1f} MB, alpha {options.lm_alpha:g}, beta {options.lm_beta:g}")
    return DecoderSpec(
        beam_width=options.beam_width,
        lm_file=file,
        lm_alpha=options.lm_alpha,
        lm_beta=options.lm_beta,
        lm_note=options.lm_note or options.lm.name,
    )


class LMError(ValueError):
    """The n-gram LM given to the export cannot be read or used."""


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {}
    for pkg in ("nemo_toolkit", "torch", "onnx", "onnxruntime-gpu", "onnxruntime", "bentoml"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            continue
    return out


def build_manifest(
    loaded: LoadedModel,
    name: str,
    vocab: tuple[list[str], int, TokenizerSpec],
    parity: ParityReport,
    variants: dict[str, Variant],
    max_samples: int,
) -> Manifest:
    model = loaded.model
    fb = model.preprocessor.featurizer
    sample_rate = int(fb.sample_rate)
    vocabulary, blank_id, tokenizer = vocab
    factor = subsampling_factor(model)
    return Manifest(
        name=name,
        language=loaded.language,
        model_class=type(model).__name__,
        sample_rate=sample_rate,
        frame_shift_s=fb.hop_length * factor / sample_rate,
        subsampling_factor=factor,
        max_segment_s=round(max_samples / sample_rate, 6),
        max_segment_samples=max_samples,
        vocabulary=vocabulary,
        blank_id=blank_id,
        tokenizer=tokenizer,
        graph=GraphSpec(
            file=GRAPH_FILE,
            inputs=[
                TensorSpec(name=INPUT_NAMES[0], dtype="float32", shape=["batch", "samples"]),
                TensorSpec(name=INPUT_NAMES[1], dtype="int64", shape=["batch"]),
            ],
            outputs=[
                TensorSpec(name=OUTPUT_NAMES[0], dtype="float32", shape=["batch", "frames", str(blank_id + 1)]),
                TensorSpec(name=OUTPUT_NAMES[1], dtype="int64", shape=["batch"]),
            ],
            opset=OPSET,
        ),
        variants=variants,
        frontend=FrontEndSpec(**featurizer_facts(fb)),
        source=loaded.source,
        versions=versions(),
        parity=parity,
        demo_notice=str(model.cfg.get("demo_notice", "") or ""),
        training=loaded.training,
    )


def _with_streaming(
    model: Any, manifest: Manifest, out_dir: Path, sample_rate: int, clips: list[Clip], wanted: bool
) -> Manifest:
    """The streaming graphs (export/streaming.py), verified against NeMo's buffered inference on three of the
    verification clips, where the model's front end allows them."""
    from export.streaming import export_streaming, supported, verify_streaming

    why = supported(model) if wanted else "--no-streaming"
    if why:
        progress(f"no streaming graphs: {why}")
        return manifest
    started = time.monotonic()
    progress("tracing the streaming graphs (front end without normalisation; encoder on features)")
    export_streaming(model, out_dir, sample_rate)
    picked = sorted(clips, key=lambda c: -c.audio.shape[0])[:3]
    spec = verify_streaming(model, out_dir, manifest, [c.audio for c in picked])
    progress(f"streaming: {spec.verified} ({time.monotonic() - started:.1f} s)")
    return manifest.model_copy(update={"streaming": spec})


def run(loaded: LoadedModel, options: Options) -> tuple[Manifest, str | None, Path]:
    """Export, verify and (unless told not to) register. Returns the manifest, the store tag and the directory
    the files were written to (gone when it was a temporary one and they were registered)."""
    from export.store import checked_name

    name = checked_name(options.name or loaded.name, given=bool(options.name))
    out_dir = options.workdir or Path(tempfile.mkdtemp(prefix="asr-artifact-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    # A temporary artifact directory goes once its files are in the store, or when the export fails; a
    # directory the caller named (--output), or the only copy (--no-register), stays.
    temporary = options.workdir is None
    try:
        return _run(loaded, options, name, out_dir, temporary)
    except BaseException:
        if temporary:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        for path in loaded.scratch:
            shutil.rmtree(path, ignore_errors=True)


def _run(
    loaded: LoadedModel, options: Options, name: str, out_dir: Path, temporary: bool
) -> tuple[Manifest, str | None, Path]:
    from export.variants import make_variant

    model = loaded.model
    sample_rate = int(model.preprocessor.featurizer.sample_rate)

    check_exportable(model)  # before anything is traced: one clear error for what we cannot reproduce
    if options.max_segment_s:
        raise_position_limit(model, options.max_segment_s, sample_rate)
    # Read the positional table's bound now: NeMo grows its own table when it meets longer audio (as the
    # verification may), while the graph keeps the table it was traced with.
    max_samples = max_segment_samples(model)
    started = time.monotonic()
    progress(f"tracing {type(model).__name__} to ONNX (front end + encoder + CTC head)")
    export_onnx(model, out_dir / GRAPH_FILE, sample_rate)
    size_mb = (out_dir / GRAPH_FILE).stat().st_size / 1e6
    progress(f"graph written: {size_mb:.1f} MB in {time.monotonic() - started:.1f} s")

    clips = options.clips or verification_clips(sample_rate, options.verify_audio, max_samples)
    vocab = vocabulary_and_tokenizer(model)
    vocabulary, blank_id, tokenizer = vocab
    detok = Detokenizer(vocabulary, tokenizer)
    progress(f"running NeMo transcribe() on {len(clips)} verification clips")
    reference = nemo_reference(model, clips)
    progress("comparing the graph with NeMo")
    parity = check_parity(
        model, ort_runner(out_dir / GRAPH_FILE), clips, detok, blank_id, sample_rate, options.tolerance, reference
    )
    progress(
        f"parity: tokens {parity.identical_tokens}/{parity.clips}, text {parity.identical_text}/{parity.clips}, "
        f"max |Δ log-prob| {parity.max_abs_logprob_diff:.2e}, padded batch max |Δ| {parity.batch_max_abs_diff:.2e}"
    )

    variants: dict[str, Variant] = {}
    for kind in options.variants:
        progress(f"making the {kind} variant")
        variants[kind] = make_variant(kind, out_dir, GRAPH_FILE, model, clips, detok, blank_id, sample_rate, reference)
        progress(f"{kind}: {variants[kind].note}")

    manifest = build_manifest(loaded, name, vocab, parity, variants, max_samples)
    if options.train_max_s:
        given = TrainingSpec(max_s=options.train_max_s, source="--train-max-s given to the export")
        manifest = manifest.model_copy(update={"training": given})
    if manifest.training:
        progress(f"training utterances up to {manifest.training.max_s:g} s ({manifest.training.source})")
    manifest = _with_streaming(model, manifest, out_dir, sample_rate, clips, options.streaming)
    if options.decoder is not None:
        manifest = manifest.model_copy(update={"decoder": pack_decoder(options.decoder, vocab, out_dir)})
    if options.itn:
        from export.itn import pack_itn

        manifest = manifest.model_copy(update={"itn": pack_itn(manifest.language, out_dir)})
    manifest.write(out_dir)
    tag = None
    if options.register:
        from export.store import register

        progress("registering in the BentoML model store")
        tag = register(name, out_dir, manifest)
        if temporary:
            shutil.rmtree(out_dir, ignore_errors=True)
    progress(f"done in {time.monotonic() - started:.1f} s")
    return manifest, tag, out_dir
