"""The models one service serves, and which of them a request gets (by `model` name and/or `language`).

Plain Python (no BentoML): service.py builds the catalog from the store entries; every per-model fact (sample
rate, vocabulary, frame shift, longest segment) comes from that model's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import BadRequest
from service.manifest import Manifest
from service.recognition.tokens import Detokenizer


class UnknownModel(BadRequest):
    code = "unknown_model"


class UnknownLanguage(BadRequest):
    code = "unknown_language"


@dataclass(frozen=True)
class ServedModel:
    name: str  # the store name: what a request gives as `model` (the full tag works too)
    tag: str  # name:version
    manifest: Manifest
    method: str  # the recognizer API that batches this model's segments (one queue per model)
    segment_samples: int  # longest piece of audio sent to the model at once
    detok: Detokenizer
    created: int = 0  # when the store entry was made, in Unix seconds (OpenAI's `created`)
    directory: Path | None = None  # the store entry (its ITN grammars are read from there)

    @classmethod
    def build(
        cls,
        tag: str,
        manifest: Manifest,
        method: str,
        segment_s: float,
        created: int = 0,
        directory: Path | None = None,
    ) -> ServedModel:
        detok = Detokenizer(manifest.vocabulary, manifest.tokenizer)
        samples = segment_samples(manifest, segment_s)
        return cls(tag.split(":")[0], tag, manifest, method, samples, detok, created, directory)

    @classmethod
    def from_store(cls, entry: Any, method: str, segment_s: float) -> ServedModel:
        """A model store entry (a bentoml.Model: tag, directory, creation time) -> the served model."""
        when = getattr(getattr(entry, "info", None), "creation_time", None)
        created = int(when.timestamp()) if when is not None else 0
        directory = Path(entry.path)
        return cls.build(str(entry.tag), Manifest.read(directory), method, segment_s, created, directory)

    @property
    def logprobs_method(self) -> str:
        """The recognizer API that batches this model's segments for beam search (log-probabilities out)."""
        return "logprobs_" + self.method.removeprefix("infer_")

    @property
    def stream_method(self) -> str:
        """The recognizer API that batches this model's streaming buffers across all open streams."""
        return "stream_" + self.method.removeprefix("infer_")

    @property
    def language(self) -> str:
        return self.manifest.language

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        described: dict[str, Any] = {
            "name": self.name,
            "tag": self.tag,
            "language": m.language,
            "sample_rate": m.sample_rate,
            "created": self.created,
        }
        described["streaming"] = m.streaming is not None  # ws /v1/realtime can transcribe with it
        described["itn"] = m.itn is not None  # `itn=true` gives the written form
        if m.demo_notice:  # a demonstration model says so wherever models are listed
            described.update(demo=True, notice=m.demo_notice)
        return described


def segment_samples(manifest: Manifest, segment_s: float) -> int:
    """ASR_SEGMENT_S in this model's samples, never beyond what its graph supports (0: the graph's limit)."""
    wanted = int(segment_s * manifest.sample_rate) if segment_s else manifest.max_segment_samples
    return min(wanted, manifest.max_segment_samples)


def target_samples(served: ServedModel, target: str) -> int:
    """ASR_SEGMENT_TARGET for this model, in its samples (0: no target, segments grow to the limit): `model`, its
    typical training utterance (the median where recorded, else the longest)."""
    if target == "off":
        return 0
    if target == "model":
        training = served.manifest.training
        return round(training.typical_s * served.manifest.sample_rate) if training else 0
    return round(float(target) * served.manifest.sample_rate)


def start_problem(tags: list[str], variant: str, entries: list[Any]) -> str:
    """What makes the served models unservable, known before any worker starts ("" when nothing): a name listed
    twice, an ASR_VARIANT a model lacks, an n-gram LM without KenLM installed. Checked when `bentoml serve`
    imports the service, so that it stops with the reason instead of restarting workers that cannot start."""
    import importlib.util

    names = [tag.split(":")[0] for tag in tags]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return f"model name(s) {', '.join(twice)} listed more than once in ASR_MODELS; serve one version of each"
    for entry in entries:
        try:
            manifest = Manifest.read(Path(entry.stored.path))
        except Exception:
            continue  # a missing or unreadable model is reported by BentoML and the recognizer, by name
        if variant and variant not in manifest.variants:
            has = ", ".join(sorted(manifest.variants)) or "none"
            return (
                f"ASR_VARIANT={variant!r}: model {entry.tag} has no {variant} variant (it has: {has}); export it "
                f"with `python -m export ... --variants {variant}` or unset ASR_VARIANT"
            )
        if manifest.decoder.lm_file and importlib.util.find_spec("kenlm") is None:
            return (
                f"model {entry.tag} has an n-gram LM ({manifest.decoder.lm_file}) and KenLM's Python module is not "
                "installed: pip install kenlm==0.3.0 (it builds with g++), or export the model without --lm"
            )
    return ""


class Catalog:
    """The served models in the order configured; the first is the default."""

    def __init__(self, models: list[ServedModel]) -> None:
        if not models:
            raise ValueError("no model to serve")
        names = [m.name for m in models]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"model name(s) {', '.join(twice)} listed more than once; serve one version of each")
        self.models = models

    @property
    def default(self) -> ServedModel:
        return self.models[0]

    def find(self, name: str) -> ServedModel | None:
        """The model a name, `name:latest` or full tag means, if served."""
        name = name.strip().removesuffix(":latest")
        return next((m for m in self.models if name in (m.name, m.tag)), None)

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def select(self, model: str = "", language: str = "") -> ServedModel:
        """`model` (a name, `name:latest` or the full tag) and/or `language` (ISO 639-1; the first served model
        in that language) -> the model; neither -> the default. A name or language not served is a 400 naming
        what is."""
        model, language = model.strip().removesuffix(":latest"), language.strip().lower()
        if model:
            chosen = self.find(model)
            if chosen is None:
                raise UnknownModel(f"unknown model {model!r}; served: {', '.join(self.names())}", "model")
            if language and language != chosen.language:
                raise UnknownLanguage(
                    f"model {chosen.name!r} transcribes {chosen.language!r}, not {language!r}; "
                    f"served: {self._listing()}",
                    "language",
                )
            return chosen
        if language:
            chosen = next((m for m in self.models if m.language == language), None)
            if chosen is None:
                raise UnknownLanguage(f"language {language!r} is not served; served: {self._listing()}", "language")
            return chosen
        return self.default

    def status(self, recognizer: dict[str, Any]) -> dict[str, Any]:
        """/status: the default model, every served model (described, with what the recognizer's `status` says
        of its session) and the recognizer's readiness."""
        running = recognizer.pop("models", [])
        models = [
            {**m.describe(), **(running[i] if i < len(running) else {"providers": [], "ready": False})}
            for i, m in enumerate(self.models)
        ]
        return {"model": self.default.tag, "language": self.default.language, **recognizer, "models": models}

    def _listing(self) -> str:
        return ", ".join(f"{m.language} ({m.name})" for m in self.models)
