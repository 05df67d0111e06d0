"""What the export says while it works: one line per step on stderr."""

from __future__ import annotations

import sys


def progress(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)
