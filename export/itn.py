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
from typing import Any

from export.progress import progress
from service.manifest import ItnSpec

TAGGER_FILE = "itn_tagger.fst"
VERBALIZER_FILE = "itn_verbalizer.fst"
ALPHABET_FILE = "alphabet.txt"  # in the cache: the characters the tagger reads
PACKAGE = "nemo_text_processing"
FORMAT = "chars2"  # how the files are made (part of the cache's key)


class ItnError(RuntimeError):
    """The model's language has grammars, but they cannot be compiled here (the export then packs none)."""


def grammar_folder(language: str) -> Path | None:
    """The installed nemo_text_processing's inverse normalisation folder for this language, where it has grammars
    (looked up on disk: importing a language's package may need what only its compilation needs)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations or not language.isidentifier():
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "inverse_text_normalization" / language
    found = (root / "taggers" / "tokenize_and_classify.py").is_file()
    return root if found and (root / "verbalizers" / "verbalize_final.py").is_file() else None


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
    if grammar_folder(language) is None:
        progress(f"no inverse text normalisation grammars for language {language!r}: no written form")
        return None
    version = importlib.metadata.version(PACKAGE)
    cached = cache_root() / f"{version}-pynini{importlib.metadata.version('pynini')}-{FORMAT}" / language
    if not all((cached / name).is_file() for name in (TAGGER_FILE, VERBALIZER_FILE, ALPHABET_FILE)):
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
        alphabet=(cached / ALPHABET_FILE).read_text(encoding="utf-8"),
        source=f"{PACKAGE} {version}, inverse_text_normalization/{language}",
    )


def compile_grammars(language: str, target: Path) -> None:
    """The language's tagger (tokenize_and_classify) and verbaliser (verbalize_final) as OpenFst files, arcs
    sorted by input label (the service composes text with them), and the tagger's alphabet. Written beside
    `target` and renamed into place: two exports at once never read half a file.

    NeMo's grammars read UTF-8 bytes; the tagger is re-labelled here to read characters (label = code point, for
    the characters of grammar_alphabet), which makes its composition with a sentence ~3x faster (a Devanagari
    character is three bytes, and the tagger's paths branch at every byte) with the same paths and weights."""
    import pynini

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
    alphabet = grammar_alphabet(language)
    tagger = pynini.compose(characters_to_bytes(alphabet), tagger).optimize()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{language}-", dir=target.parent))
    try:
        for fst, name in ((tagger, TAGGER_FILE), (verbalizer, VERBALIZER_FILE)):
            fst.arcsort("ilabel")
            fst.write(str(scratch / name))
        (scratch / ALPHABET_FILE).write_text(alphabet, encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def grammar_alphabet(language: str) -> str:
    """Printable ASCII, every character of the language's grammar data, and the whole 128-character block of its
    script(s) (a block holding a tenth of those characters or more: Devanagari for Hindi), in code point order.
    A model's words with any other character are left as spoken."""
    folder = grammar_folder(language)
    assert folder is not None
    data = folder / "data"
    points = set(range(0x20, 0x7F))
    blocks: dict[int, int] = {}
    for path in data.rglob("*.tsv"):
        for ch in path.read_text(encoding="utf-8"):
            if ord(ch) >= 0x80 and ch.isprintable():
                points.add(ord(ch))
                blocks[ord(ch) // 128] = blocks.get(ord(ch) // 128, 0) + 1
    for block, count in blocks.items():
        if count >= 0.1 * sum(blocks.values()):
            points.update(p for p in range(block * 128, block * 128 + 128) if chr(p).isprintable())
    return "".join(chr(p) for p in sorted(points))


def characters_to_bytes(alphabet: str) -> Any:
    """A transducer from characters (label = code point) to their UTF-8 bytes (label = byte), any number of
    them: composed before the tagger, it makes the tagger read characters."""
    import pynini
    import pywrapfst

    fst = pynini.Fst()
    start = fst.add_state()
    fst.set_start(start)
    fst.set_final(start)
    one = pywrapfst.Weight.one(fst.weight_type())
    for ch in alphabet:
        encoded = ch.encode("utf-8")
        state = start
        for k, byte in enumerate(encoded):
            following = start if k == len(encoded) - 1 else fst.add_state()
            fst.add_arc(state, pywrapfst.Arc(ord(ch) if k == 0 else 0, byte, one, following))
            state = following
    fst.arcsort("olabel")
    return fst
