"""Greedy CTC decoding of log-probabilities: argmax per frame, collapse repeats, drop blanks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class GreedyResult:
    """One utterance's greedy CTC path, reduced to its emitted tokens."""

    token_ids: npt.NDArray[np.int64]  # emitted tokens, repeats collapsed, blanks dropped
    first_frame: npt.NDArray[np.int64]  # frame where each token starts
    last_frame: npt.NDArray[np.int64]  # last frame of each token's run (repeats of it included)
    probability: npt.NDArray[np.float32]  # mean per-frame probability of the token over its run
    frames: int  # valid frames of the utterance


def frame_argmax(logprobs: npt.NDArray[np.float32], length: int) -> npt.NDArray[np.int64]:
    """Per-frame best token over the first `length` frames (ties go to the lower id, as torch.argmax)."""
    return np.asarray(logprobs[:length].argmax(axis=-1), dtype=np.int64)


def greedy_decode(logprobs: npt.NDArray[np.float32], length: int, blank_id: int) -> GreedyResult:
    """Decode one utterance: `logprobs` is [frames, vocab+1] (padding beyond `length` is ignored)."""
    length = max(0, min(int(length), logprobs.shape[0]))
    best = frame_argmax(logprobs, length)
    return greedy_path(best, logprobs[np.arange(length), best], length, blank_id)


def greedy_path(
    best: npt.NDArray[np.int64], best_logprob: npt.NDArray[np.float32], length: int, blank_id: int
) -> GreedyResult:
    """Decode one utterance from its per-frame best token and that token's log-probability (what the greedy
    head computes on a GPU; greedy_decode takes them from the full log-probabilities)."""
    length = max(0, min(int(length), best.shape[0]))
    empty_i = np.zeros(0, np.int64)
    if length == 0:
        return GreedyResult(empty_i, empty_i, empty_i, np.zeros(0, np.float32), 0)
    best = np.asarray(best[:length], dtype=np.int64)
    # A run starts where the label changes; a run of the blank emits nothing.
    starts = np.flatnonzero(np.r_[True, best[1:] != best[:-1]])
    ends = np.r_[starts[1:], length] - 1
    labels = best[starts]
    keep = labels != blank_id
    starts, ends, labels = starts[keep], ends[keep], labels[keep]
    frame_prob = np.exp(best_logprob[:length].astype(np.float64))
    cumulative = np.r_[0.0, np.cumsum(frame_prob)]
    prob = ((cumulative[ends + 1] - cumulative[starts]) / (ends - starts + 1)).astype(np.float32)
    return GreedyResult(labels.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64), prob, length)


def collapse(path: npt.NDArray[np.int64], blank_id: int) -> list[int]:
    """NeMo's fold: a token is emitted when it differs from the previous frame's label and is not blank."""
    if path.size == 0:
        return []
    starts = np.r_[True, path[1:] != path[:-1]]
    tokens = path[starts]
    return [int(t) for t in tokens if t != blank_id]
