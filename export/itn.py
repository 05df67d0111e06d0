"""The model's written form: NeMo's inverse text normalisation grammars (nemo_text_processing) for its language,
compiled into two OpenFst files that travel in the model's store entry and that the service applies with
kaldifst (service/recognition/written.py): no grammar compiles, and no nemo_text_processing or pynini, where
the service runs.

nemo_text_processing declares transformers and a pynini pin with no wheel for this Python; scripts/setup.sh
installs it with --no-deps beside pynini 2.1.7 and the few packages it imports. Compiling Hindi takes ~20 s, so
the files are kept in a cache keyed by both versions and copied from there by later exports."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from export.progress import progress
from service.manifest import ItnSpec

TAGGER_FILE = "itn_tagger.fst"
VERBALIZER_FILE = "itn_verbalizer.fst"
PACKAGE = "nemo_text_processing"


class ItnError(RuntimeError):
    """The model's language has grammars, but they cannot be compiled here (the export then packs none)."""


def has_grammars(language: str) -> bool:
    """Whether the installed nemo_text_processing has inverse normalisation grammars for this language (looked
    up on disk: importing a language's package may need what only its compilation needs)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations or not language.isidentifier():
        return False
    root = Path(next(iter(spec.submodule_search_locations))) / "inverse_text_normalization" / language
    return (root / "taggers" / "tokenize_and_classify.py").is_file() and (
        root / "verbalizers" / "verbalize_final.py"
    ).is_file()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nemo-ctc-bento" / "itn"


def pack_itn(language: str, out_dir: Path) -> ItnSpec | None:
    """The grammars for `language` compiled (or taken from the cache) and copied into `out_dir`; None, saying why,
    when there are none for it or they cannot be compiled here: the model exports without a written form."""
    if importlib.util.find_spec(PACKAGE) is None:
        progress(
            f"warning: {PACKAGE} is not installed, so no written form (ITN) is packed: run scripts/setup.sh "
            "(it installs it with --no-deps)"
        )
        return None
    if not has_grammars(language):
        progress(f"no inverse text normalisation grammars for language {language!r}: no written form")
        return None
    version = importlib.metadata.version(PACKAGE)
    cached = cache_root() / f"{version}-pynini{importlib.metadata.version('pynini')}" / language
    if not (cached / TAGGER_FILE).is_file() or not (cached / VERBALIZER_FILE).is_file():
        progress(f"compiling {PACKAGE} {version}'s {language} ITN grammars (once; cached in {cached})")
        try:
            compile_grammars(language, cached)
        except ItnError as exc:
            progress(f"warning: no written form (ITN): {exc}")
            return None
    for name in (TAGGER_FILE, VERBALIZER_FILE):
        shutil.copyfile(cached / name, out_dir / name)
    size_mb = sum((out_dir / n).stat().st_size for n in (TAGGER_FILE, VERBALIZER_FILE)) / 1e6
    progress(f"ITN grammars ({language}) packed: {size_mb:.1f} MB")
    return ItnSpec(
        language=language,
        tagger_file=TAGGER_FILE,
        verbalizer_file=VERBALIZER_FILE,
        source=f"{PACKAGE} {version}, inverse_text_normalization/{language}",
    )


def compile_grammars(language: str, target: Path) -> None:
    """The language's tagger (tokenize_and_classify) and verbaliser (verbalize_final) as OpenFst files, arcs
    sorted by input label (the service composes text with them). Written beside `target` and renamed into place:
    two exports at once never read half a file."""
    base = f"{PACKAGE}.inverse_text_normalization.{language}"
    try:
        classify = importlib.import_module(f"{base}.taggers.tokenize_and_classify").ClassifyFst
        verbalize = importlib.import_module(f"{base}.verbalizers.verbalize_final").VerbalizeFinalFst
    except ImportError as exc:
        raise ItnError(
            f"the {language} ITN grammars need {exc.name or exc}, which is not installed (or export with --no-itn)"
        ) from exc
    # the same arguments InverseNormalizer passes; no grammar cache of its own (ours is the compiled files)
    tagger = classify(cache_dir=None, whitelist=None, overwrite_cache=False, input_case="lower_cased").fst
    verbalizer = verbalize().fst.optimize()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{language}-", dir=target.parent))
    try:
        for fst, name in ((tagger, TAGGER_FILE), (verbalizer, VERBALIZER_FILE)):
            fst.arcsort("ilabel")
            fst.write(str(scratch / name))
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
