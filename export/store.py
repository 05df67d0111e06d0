"""Register the verified artifact in the BentoML model store ($BENTOML_HOME)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from export.progress import progress
from service.manifest import Manifest


class StoreNameError(ValueError):
    """A store name the user gave that BentoML cannot take as it is."""


VALID = re.compile(r"^[a-z0-9]([a-z0-9_.-]*[a-z0-9])?$")


def store_name(name: str) -> str:
    """BentoML tag names: lowercase letters, digits, '-', '_' and '.', starting with a letter or digit."""
    cleaned = re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_.-")
    return cleaned or "asr_model"


def checked_name(name: str, given: bool) -> str:
    """The store name to use: one the user gave must be valid as it is (refused otherwise, with a valid
    suggestion); one derived from a file name or config is made valid, and the change is said."""
    if VALID.match(name):
        return name
    valid = store_name(name)
    if given:
        raise StoreNameError(
            f"--name {name!r} is not a valid store name (lowercase letters, digits, '-', '_' and '.', starting and "
            f"ending with a letter or digit); for example --name {valid}"
        )
    progress(f"the model's name {name!r} is not a valid store name: registering it as {valid!r} (--name sets it)")
    return valid


def headline(manifest: Manifest) -> tuple[dict[str, str], dict[str, object]]:
    """Store labels (short strings) and metadata (the manifest's headline facts)."""
    p = manifest.parity
    labels = {
        "task": "speech-to-text",
        "language": manifest.language,
        "model_class": manifest.model_class,
        "source": manifest.source.get("kind", "unknown"),
    }
    metadata: dict[str, object] = {
        "sample_rate": manifest.sample_rate,
        "language": manifest.language,
        "vocabulary_size": len(manifest.vocabulary),
        "blank_id": manifest.blank_id,
        "frame_shift_s": manifest.frame_shift_s,
        "max_segment_s": manifest.max_segment_s,
        "tokenizer": manifest.tokenizer.kind,
        "graph": manifest.graph.file,
        "variants": sorted(manifest.variants),
        "source": dict(manifest.source),
        "parity_identical_tokens": f"{p.identical_tokens}/{p.clips}",
        "parity_max_abs_logprob_diff": p.max_abs_logprob_diff,
        "parity_batch_max_abs_diff": p.batch_max_abs_diff,
        "versions": dict(manifest.versions),
    }
    return labels, metadata


def register(name: str, directory: Path, manifest: Manifest) -> str:
    """Copy the graph files, the n-gram LM and the ITN grammars if any, and the manifest into a new store
    version; return its tag."""
    import bentoml

    labels, metadata = headline(manifest)
    files = [manifest.graph.file, *(v.file for v in manifest.variants.values())]
    if manifest.decoder.lm_file:
        files.append(manifest.decoder.lm_file)
    if manifest.streaming is not None:
        files += [manifest.streaming.frontend_file, manifest.streaming.encoder_file]
    if manifest.itn is not None:
        files += [manifest.itn.tagger_file, manifest.itn.verbalizer_file]
    with bentoml.models.create(name, labels=labels, metadata=metadata) as entry:
        target = Path(entry.path)
        for file in files:
            shutil.copy2(directory / file, target / file)
        manifest.write(target)
        tag = str(entry.tag)
    return tag
