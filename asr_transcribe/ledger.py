"""What is done: one JSON file in the output folder naming, for every finished input, its transcript, the
options it was made with and the input's size, modification time and SHA-256. A rerun skips a file whose
transcript is there and whose input and options did not change (a touched but identical file is recognised by
its hash); anything else is sent again. With --jobs it also names the job each unfinished input waits for, so a
rerun after Ctrl-C waits for that job rather than submitting the file again. Written atomically after every
change, so an interrupted run loses at most the files in flight."""

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
        self.jobs: dict[str, dict[str, Any]] = {}  # --jobs: the job each unfinished input waits for
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{self.path} is not a ledger this tool wrote ({exc}); move it away") from None
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"{self.path} is not a ledger this tool wrote; move it away")
            self.entries = dict(data.get("files", {}))
            self.jobs = dict(data.get("jobs", {}))

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
            self.jobs.pop(str(source), None)
            self._save()

    def _save(self) -> None:
        payload = {"version": VERSION, "files": self.entries, "jobs": self.jobs}
        write_atomically(self.path, json.dumps(payload, ensure_ascii=False, indent=1).encode())

    def waiting_job(self, source: Path, options: dict[str, Any]) -> str | None:
        """The job an earlier run submitted for this input with these options (it may still be running)."""
        entry = self.jobs.get(str(source))
        stat = source.stat()
        same_input = entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns
        if entry and same_input and entry.get("options") == options:
            return str(entry["task_id"])
        return None

    def remember_job(self, source: Path, options: dict[str, Any], task_id: str) -> None:
        stat = source.stat()
        entry = {"task_id": task_id, "options": options, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        with self._lock:
            self.jobs[str(source)] = entry
            self._save()

    def duration_s(self, source: Path) -> float | None:
        value = self.entries.get(str(source), {}).get("duration_s")
        return float(value) if isinstance(value, (int, float)) else None
