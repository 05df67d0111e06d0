"""Where a benchmark's figures go: its results file (benchmarks/results/, what docs/ quote) and the terminal."""

from __future__ import annotations

from pathlib import Path


def publish(out: Path, lines: list[str]) -> int:
    """Write the lines to `out` (its folder made) and print them; the script's exit status."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0
