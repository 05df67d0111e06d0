"""Where a NeMo CTC model comes from: a pretrained name, a local .nemo file, or a config shipped here."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.manifest import TrainingSpec

CONFIG_DIR = Path(__file__).parent / "configs"
CORPUS = CONFIG_DIR / "hindi_corpus.txt"
DEFAULT_PRETRAINED = "stt_hi_conformer_ctc_medium"

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """The model could not be obtained; the message says what to do instead."""


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # a NeMo EncDecCTCModel / EncDecCTCModelBPE in eval mode
    name: str  # default store name
    language: str
    source: dict[str, str]  # how it was obtained, for the manifest
    scratch: tuple[Path, ...] = ()  # temporary directories made for it, removed when the export ends
    training: TrainingSpec | None = None  # how long its training utterances were, where that is written


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_ctc(model: Any, origin: str) -> None:
    from nemo.collections.asr.models import EncDecCTCModel

    if not isinstance(model, EncDecCTCModel):
        raise SourceError(f"{origin} is a {type(model).__name__}, not a NeMo CTC model (EncDecCTCModel[BPE])")


def _language_of(model: Any, fallback: str) -> str:
    for key in ("language", "lang", "target_lang"):
        value = model.cfg.get(key) if hasattr(model.cfg, "get") else None
        if isinstance(value, str) and value:
            return value
    return fallback


def training_durations(model: Any, checkpoint: Path | None = None) -> TrainingSpec | None:
    """How long the training utterances were: NeMo's training config (`train_ds.max_duration`, the longest: NeMo
    drops longer utterances from training), else the summary a training run here writes beside its checkpoint
    (training.json's `utterance_seconds`, the longest and the median: demo/train.py) when it names this model."""
    train_ds = model.cfg.get("train_ds") if hasattr(model.cfg, "get") else None
    longest = train_ds.get("max_duration") if train_ds is not None and hasattr(train_ds, "get") else None
    if isinstance(longest, int | float) and longest > 0:
        return TrainingSpec(max_s=float(longest), source="train_ds.max_duration in the model's config")
    summary = checkpoint.with_name("training.json") if checkpoint else None
    if summary is None or not summary.is_file():
        return None
    try:
        recorded = json.loads(summary.read_text(encoding="utf-8"))
        if recorded.get("name") not in (model.cfg.get("name"), checkpoint.stem if checkpoint else None):
            return None
        lengths = recorded["utterance_seconds"]
        longest, median = float(lengths["max"]), float(lengths.get("median") or 0)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not 0 < longest < math.inf:
        return None
    source = f"utterance_seconds in {summary.name} beside the checkpoint"
    return TrainingSpec(max_s=longest, median_s=median if 0 < median <= longest else None, source=source)


def from_pretrained(name: str, language: str | None) -> LoadedModel:
    """Download through NeMo (NGC / Hugging Face). Offline this raises SourceError with one clear line."""
    from nemo.collections.asr.models import ASRModel

    try:
        model = ASRModel.from_pretrained(model_name=name, map_location="cpu")
    except Exception as exc:  # NeMo wraps network failures in many types; we only need the gist.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(
            f"could not download pretrained model {name!r} ({first[:200]}). Without network access, export a "
            "local file with `python -m export --nemo PATH.nemo`, the demo model trained here on synthetic speech "
            "with `python -m export --nemo demo/stt_hi_demo_conformer_ctc.nemo`, or the architecture with "
            "random weights with `python -m export --config medium`."
        ) from None
    _check_ctc(model, f"pretrained model {name!r}")
    lang = language or _language_of(model, name.split("_")[1] if name.startswith("stt_") else "und")
    return LoadedModel(
        model.eval(), name, lang, {"kind": "pretrained", "name": name}, training=training_durations(model)
    )


def from_nemo(path: Path, language: str | None) -> LoadedModel:
    from nemo.collections.asr.models import ASRModel

    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    try:
        model = ASRModel.restore_from(str(path), map_location="cpu")
    except Exception as exc:
        raise SourceError(f"{path} is not a readable .nemo model ({type(exc).__name__}: {str(exc)[:200]})") from None
    _check_ctc(model, str(path))
    return LoadedModel(
        model.eval(),
        path.stem,
        language or _language_of(model, "und"),
        {"kind": "nemo", "path": path.name, "sha256": _sha256(path)},
        training=training_durations(model, path),
    )


def resolve_config(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise SourceError(f"unknown config {name_or_path!r}: give a YAML path or one of {', '.join(names)}")


@contextlib.contextmanager
def quiet_fds(*fds: int) -> Iterator[None]:
    """Silence file descriptors (C++ loggers such as SentencePiece's trainer write to them directly)."""
    saved = [os.dup(fd) for fd in fds]
    try:
        with open(os.devnull, "wb") as null:
            for fd in fds:
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, copy_ in zip(fds, saved, strict=True):
            os.dup2(copy_, fd)
            os.close(copy_)


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def from_config(name_or_path: str, language: str | None, workdir: Path | None = None) -> LoadedModel:
    """Build a model with random (seeded) weights; its tokenizer is trained on the shipped Hindi corpus."""

    path = resolve_config(name_or_path)
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    scratch: tuple[Path, ...] = () if workdir else (Path(tempfile.mkdtemp(prefix="asr-export-")),)
    try:
        return _build(path, spec, language, workdir or scratch[0], scratch)
    except BaseException:
        for directory in scratch:
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _build(
    path: Path, spec: dict[str, Any], language: str | None, workdir: Path, scratch: tuple[Path, ...]
) -> LoadedModel:
    import torch
    from nemo.collections.asr.models import EncDecCTCModel, EncDecCTCModelBPE
    from omegaconf import OmegaConf

    build, cfg = spec["build"], copy.deepcopy(spec["model"])
    _seed(int(build.get("seed", 0)))

    if build["model_class"] == "EncDecCTCModelBPE":
        from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

        tok_dir = workdir / "tokenizer"
        with quiet_fds(2):
            create_spt_model(
                data_file=str(CORPUS),
                vocab_size=int(build["vocab_size"]),
                sample_size=-1,
                do_lower_case=False,
                tokenizer_type=build.get("tokenizer_type", "unigram"),
                output_dir=str(tok_dir),
            )
        cfg["tokenizer"] = {"dir": str(tok_dir), "type": "bpe"}
        model = EncDecCTCModelBPE(cfg=OmegaConf.create(cfg))
    elif build["model_class"] == "EncDecCTCModel":
        text = CORPUS.read_text(encoding="utf-8")
        labels = sorted(set(text) - {"\n"})
        cfg["labels"] = labels
        cfg["decoder"]["vocabulary"] = labels
        cfg["decoder"]["num_classes"] = len(labels)
        model = EncDecCTCModel(cfg=OmegaConf.create(cfg))
    else:
        raise SourceError(f"{path}: build.model_class must be EncDecCTCModel or EncDecCTCModelBPE")

    with torch.no_grad():
        # Random heads favour a few tokens everywhere; a zero bias and a louder subsampling stage make
        # the output change from frame to frame, which is what a parity test needs to be strong.
        bias = getattr(model.decoder.decoder_layers[0], "bias", None)
        if bias is not None:
            bias.zero_()
        scale = float(build.get("scale_subsampling", 1.0))
        if scale != 1.0:
            for p in model.encoder.pre_encode.parameters():
                p.mul_(scale)
    lang = language or str(build.get("language", "und"))
    source = {"kind": "config", "config": path.name, "seed": str(build.get("seed", 0))}
    return LoadedModel(model.eval(), str(build["name"]), lang, source, scratch, training_durations(model))
