"""Build a word n-gram language model (ARPA, interpolated Kneser-Ney) from a text file, for beam search.

    python -m export.lm --text corpus.txt --out lm.arpa [--order 3] [--model TAG]
    python -m export ... --lm lm.arpa --lm-alpha 0.5 --lm-beta 1.0     # pack it with the model

One sentence per line. With `--model`, the text is fitted to that model's vocabulary first: characters it
cannot write become spaces (punctuation, Latin script in a Devanagari model), so the LM's words are words
the model can spell. KenLM reads the ARPA file as it is; KenLM's own `build_binary` (not part of the Python
module) turns it into the faster-loading binary format, which the export takes as well.

Interpolated Kneser-Ney, written as ARPA backoff weights the way SRILM and KenLM's lmplz write interpolated
models: an n-gram's stored probability is the interpolated one, and a history's backoff is the probability
mass its discounts freed. One discount per order, D = n1 / (n1 + 2 n2) from that order's count-of-counts.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def fit_to_vocabulary(line: str, characters: set[str] | None) -> list[str]:
    """A line's words; with `characters`, anything outside them is a word break."""
    if characters is not None:
        line = "".join(c if c in characters else " " for c in line)
    return line.split()


def _discount(counts: Iterable[int]) -> float:
    of = Counter(c for c in counts if c <= 2)
    n1, n2 = of[1], of[2]
    if n1 == 0 or n2 == 0:
        return 0.5
    return min(0.95, max(0.05, n1 / (n1 + 2 * n2)))


def build_arpa(sentences: Iterable[Sequence[str]], order: int = 3) -> str:
    """The ARPA text of an interpolated Kneser-Ney model of `order` over the sentences' words."""
    if order < 2:
        raise ValueError("the order must be at least 2 (KenLM reads no unigram-only model)")
    highest: Counter[tuple[str, ...]] = Counter()
    for words in sentences:
        if not words:
            continue
        padded = [BOS, *words, EOS]
        for n in range(1, order + 1):
            for i in range(max(0, 1 if n == 1 else 0), len(padded) - n + 1):
                gram = tuple(padded[i : i + n])
                if n == order or gram[0] == BOS:  # n-grams from the sentence start keep their raw counts
                    highest[gram] += 1
    if not highest:
        raise ValueError("the text holds no words")
    # Lower orders count distinct left extensions (continuation counts), except from the sentence start.
    counts: dict[int, Counter[tuple[str, ...]]] = {n: Counter() for n in range(1, order + 1)}
    for gram, c in highest.items():
        counts[len(gram)][gram] += c
    for n in range(order, 1, -1):
        for gram in counts[n]:
            suffix = gram[1:]
            if suffix[0] != BOS:
                counts[n - 1][suffix] += 1
    vocabulary = {g[0] for g in counts[1]} | {UNK}  # what can follow: never <s>
    probs: dict[int, dict[tuple[str, ...], float]] = {}
    backoffs: dict[int, dict[tuple[str, ...], float]] = {}
    for n in range(1, order + 1):
        d = _discount(counts[n].values())
        totals: defaultdict[tuple[str, ...], int] = defaultdict(int)
        followers: defaultdict[tuple[str, ...], int] = defaultdict(int)
        for gram, c in counts[n].items():
            totals[gram[:-1]] += c
            followers[gram[:-1]] += 1
        probs[n] = {}
        for gram, c in counts[n].items():
            h = gram[:-1]
            lower = 1.0 / len(vocabulary) if n == 1 else _lookup(probs, backoffs, gram[1:])
            probs[n][gram] = max(c - d, 0.0) / totals[h] + d * followers[h] / totals[h] * lower
        if n == 1:  # what the unigrams' discounts freed goes to every word alike, <unk> included
            free = d * followers[()] / totals[()]
            probs[1][(UNK,)] = free / len(vocabulary)
        backoffs[n - 1] = {h: d * followers[h] / totals[h] for h in totals if h}
    lines = ["", "\\data\\"]
    sizes = {n: len(probs[n]) + (1 if n == 1 else 0) for n in range(1, order + 1)}
    lines += [f"ngram {n}={sizes[n]}" for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        rows = dict(probs[n])
        if n == 1:
            rows[(BOS,)] = 0.0
        for gram in sorted(rows):
            p = -99.0 if gram == (BOS,) else math.log10(rows[gram])
            row = f"{p:.6f}\t{' '.join(gram)}"
            if n < order and gram in backoffs.get(n, {}):
                row += f"\t{math.log10(backoffs[n][gram]):.6f}"
            lines.append(row)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def _lookup(
    probs: dict[int, dict[tuple[str, ...], float]],
    backoffs: dict[int, dict[tuple[str, ...], float]],
    gram: tuple[str, ...],
) -> float:
    """P(last word | the rest) by the orders built so far, backing off through histories not seen."""
    n = len(gram)
    if gram in probs[n]:
        return probs[n][gram]
    if n == 1:
        return probs[1][(UNK,)]
    return backoffs.get(n - 1, {}).get(gram[:-1], 1.0) * _lookup(probs, backoffs, gram[1:])


def model_characters(tag: str) -> set[str] | None:
    """The characters a stored model writes (character vocabularies), or None (SentencePiece: any text)."""
    import bentoml

    from service.manifest import Manifest

    manifest = Manifest.read(Path(bentoml.models.get(tag).path))
    if manifest.tokenizer.kind != "characters":
        return None
    return {c for piece in manifest.vocabulary for c in piece if not c.isspace()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.lm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", type=Path, required=True, help="UTF-8 text, one sentence per line")
    parser.add_argument("--out", type=Path, required=True, help="the ARPA file to write")
    parser.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    parser.add_argument("--model", help="a store tag: keep only what this model can write")
    args = parser.parse_args(argv)
    characters = model_characters(args.model) if args.model else None
    with args.text.open(encoding="utf-8") as f:
        sentences = [fit_to_vocabulary(line, characters) for line in f]
    try:
        arpa = build_arpa(sentences, args.order)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.write_text(arpa, encoding="utf-8")
    words = sum(len(s) for s in sentences)
    print(
        f"{args.out}: order {args.order}, {words} words in {sum(1 for s in sentences if s)} sentences", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
