"""Published figures come from the scripts that measure them: every table row of docs/benchmarks.md is a row a
benchmark script wrote into benchmarks/results/ (or into the suite's own block, which benchmarks/suite.py
writes), so a figure typed or edited by hand fails here. Prose figures are each quoted with their results file
or marked as a one-off measurement with how it was made."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE_BLOCK = re.compile(r"<!-- results:start -->.*?<!-- results:end -->", re.S)
SEPARATOR = re.compile(r"\|[\s|:-]+\|")


def rows(text: str) -> list[str]:
    """A markdown file's table rows, whitespace removed (a table's alignment is not a figure)."""
    return [
        re.sub(r"\s+", "", line)
        for line in text.splitlines()
        if line.startswith("|") and not SEPARATOR.fullmatch(line.strip())
    ]


def test_every_table_row_in_the_benchmarks_doc_was_written_by_a_script() -> None:
    written = {row for path in (ROOT / "benchmarks" / "results").glob("*.md") for row in rows(path.read_text("utf-8"))}
    doc = (ROOT / "docs" / "benchmarks.md").read_text("utf-8")
    assert SUITE_BLOCK.search(doc), "the suite's block is gone"
    typed = [row for row in rows(SUITE_BLOCK.sub("", doc)) if row not in written]
    assert typed == [], f"table rows in docs/benchmarks.md that no results file holds: {typed}"


def test_the_check_finds_a_typed_figure(tmp_path: Path) -> None:
    """The check itself: a row whose figure differs from its results file's is caught."""
    written = set(rows("| clean | 2.8% | 14.5% | 118 |\n|---|---|---|---|\n"))
    assert rows("| clean | 2.8% | 14.5% | 118 |")[0] in written
    assert rows("| clean | 2.8% | 14.4% | 118 |")[0] not in written
