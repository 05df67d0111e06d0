"""Character and word error rates (Levenshtein distance over characters or words, divided by the reference's
length), and the area under the ROC curve, for the demo model's evaluation, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus CER: total character edits / total reference characters (spaces count as characters)."""
    edits = sum(edit_distance(list(r), list(h)) for r, h in zip(refs, hyps, strict=True))
    return edits / max(1, sum(len(r) for r in refs))


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words."""
    edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))
    return edits / max(1, sum(len(r.split()) for r in refs))


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties counting half."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))
