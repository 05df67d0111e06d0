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


def align_words(truth: Sequence[str], got: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs (true index, predicted index) of a minimum-edit alignment of two word sequences (matches and
    substitutions; a deleted or inserted word pairs with nothing)."""
    n, m = len(truth), len(got)
    cost = [[i + j if i == 0 or j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j - 1] + (truth[i - 1] != got[j - 1]), cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    pairs, i, j = [], n, m
    while i and j:
        if cost[i][j] == cost[i - 1][j - 1] + (truth[i - 1] != got[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


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
