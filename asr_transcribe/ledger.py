"""What is done: one JSON file in the output folder naming, for every finished input, its transcript, the
options it was made with and the input's size, modification time and SHA-256. A rerun skips a file whose
transcript is there and whose input and options did not change (a touched but identical file is recognised by
its hash); anything else is sent again. Written atomically after every file, so an interrupted run loses at
most the files in flight."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

NAME = "asr-transcribe.json"
VERSION = 1


def write_atomically(path: Path, data: bytes) -> None:
    """The whole file or the old one, never half of it: written beside it, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Ledger:
    def __init__(self, folder: Path) -> None:
        self.path = folder / NAME
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{self.path} is not a ledger this tool wrote ({exc}); move it away") from None
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"{self.path} is not a ledger this tool wrote; move it away")
            self.entries = dict(data.get("files", {}))

    def done(self, source: Path, output: Path, options: dict[str, Any]) -> bool:
        """True when `output` holds this input's transcript made with these options."""
        entry = self.entries.get(str(source))
        if entry is None or entry.get("options") != options or entry.get("output") != str(output):
            return False
        if not (self.path.parent / output).is_file():
            return False
        stat = source.stat()
        if entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            return True
        return entry.get("size") == stat.st_size and entry.get("sha256") == sha256(source)

    def record(self, source: Path, output: Path, options: dict[str, Any], duration_s: float | None) -> None:
        stat = source.stat()
        entry = {
            "output": str(output),
            "options": options,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256(source),
            "duration_s": duration_s,
        }
        with self._lock:
            self.entries[str(source)] = entry
            payload = {"version": VERSION, "files": self.entries}
            write_atomically(self.path, json.dumps(payload, ensure_ascii=False, indent=1).encode())

    def duration_s(self, source: Path) -> float | None:
        value = self.entries.get(str(source), {}).get("duration_s")
        return float(value) if isinstance(value, (int, float)) else None
