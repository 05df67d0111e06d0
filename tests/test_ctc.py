"""Greedy CTC decoding: table-driven cases and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.recognition.ctc import greedy_decode

BLANK = 4


def one_hot(path: list[int], vocab: int = 5, pad: int = 0) -> np.ndarray:
    lp = np.full((len(path) + pad, vocab), -10.0, np.float32)
    lp[np.arange(len(path)), path] = -0.01
    lp[len(path) :, 0] = 0.0  # padding says "token 0" loudly: it must be ignored
    return lp


@pytest.mark.parametrize(
    ("path", "tokens", "first", "last"),
    [
        ([], [], [], []),
        ([BLANK, BLANK], [], [], []),
        ([1, 1, 1], [1], [0], [2]),
        ([1, BLANK, 1], [1, 1], [0, 2], [0, 2]),
        ([1, 1, 2, 2, BLANK, 2], [1, 2, 2], [0, 2, 5], [1, 3, 5]),
        ([BLANK, 3, BLANK, BLANK, 0], [3, 0], [1, 4], [1, 4]),
    ],
)
def test_greedy_table(path: list[int], tokens: list[int], first: list[int], last: list[int]) -> None:
    r = greedy_decode(one_hot(path, pad=3), len(path), BLANK)
    assert r.token_ids.tolist() == tokens
    assert r.first_frame.tolist() == first and r.last_frame.tolist() == last
    assert r.frames == len(path)
    assert np.all((r.probability > 0.98) & (r.probability <= 1.0))


def reference(path: list[int]) -> list[int]:
    """CTC's rule, written independently of the service's code: runs of one label fold into one, blanks drop."""
    import itertools

    return [label for label, _ in itertools.groupby(path) if label != BLANK]


@given(st.lists(st.integers(0, BLANK), max_size=60), st.integers(0, 5))
def test_greedy_matches_ctcs_rule_and_ignores_padding(path: list[int], pad: int) -> None:
    r = greedy_decode(one_hot(path, pad=pad), len(path), BLANK)
    assert r.token_ids.tolist() == reference(path)
    assert BLANK not in r.token_ids.tolist()
    assert np.all(np.diff(r.first_frame) > 0) and np.all(r.last_frame >= r.first_frame)
    assert np.all(r.last_frame < max(len(path), 1))
