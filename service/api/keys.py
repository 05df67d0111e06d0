"""API keys: who may use the service. Keys come from ASR_API_KEYS_FILE (one per line, or `sha256:<hex>` of one;
`#` comments; re-read when the file changes, so a Kubernetes Secret mounted as a file rotates them without a
restart) and ASR_API_KEYS (comma-separated, for development). Only their SHA-256 digests are kept; a presented
key is hashed and compared with every digest in constant time. A key is named in logs and metrics by a short id,
the first 8 hex digits of its SHA-256, never by itself."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("asr")

# RFC 9110's token characters: what an Authorization header and a WebSocket subprotocol can carry unquoted
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
RELOAD_EVERY_S = 1.0  # how often the keys file is looked at (a changed file takes effect within this)
SUBPROTOCOL = "openai-insecure-api-key."  # how browsers send a key to OpenAI's realtime API


class KeysError(ValueError):
    """Keys that cannot be used; the message never holds a key."""


def key_id(digest: bytes) -> str:
    return digest.hex()[:8]


def parse(text: str, source: str) -> list[bytes]:
    """Lines (or comma-separated entries) of keys -> their SHA-256 digests."""
    digests = []
    for number, raw in enumerate(text.splitlines(), 1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        hashed = HASHED.fullmatch(entry)
        if hashed:
            digests.append(bytes.fromhex(hashed.group(1)))
        elif TOKEN.fullmatch(entry):
            digests.append(hashlib.sha256(entry.encode()).digest())
        else:
            raise KeysError(
                f"{source}, entry {number}: an API key holds only letters, digits and !#$%&'*+.^_`|~- "
                "(or is sha256:<64 hex digits>)"
            )
    return digests


@dataclass
class _Loaded:
    digests: tuple[bytes, ...]
    stamp: tuple[int, int, int]  # the file's (inode, size, mtime_ns) when read


class KeyStore:
    """The keys in force. `enabled` is False when neither setting gives any: the service is open."""

    def __init__(self, file: str = "", listed: tuple[str, ...] = ()) -> None:
        self.file = file
        self.fixed = parse("\n".join(listed), "ASR_API_KEYS") if listed else []
        self._lock = threading.Lock()
        self._loaded = self._read() if file else _Loaded((), (0, 0, 0))
        self._checked = time.monotonic()
        self.enabled = bool(file or listed)

    def _stamp(self) -> tuple[int, int, int]:
        info = os.stat(self.file)
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _read(self) -> _Loaded:
        try:
            stamp = self._stamp()
            with open(self.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise KeysError(f"ASR_API_KEYS_FILE={self.file!r} cannot be read: {exc.strerror}") from None
        return _Loaded(tuple(parse(text, f"ASR_API_KEYS_FILE {self.file}")), stamp)

    def _current(self) -> tuple[bytes, ...]:
        """The file's keys, re-read when it changed (looked at once a second at most); a file that no longer
        reads keeps the keys in force (and says so in the log)."""
        if self.file and time.monotonic() - self._checked >= RELOAD_EVERY_S:
            with self._lock:
                self._checked = time.monotonic()
                try:
                    if self._stamp() != self._loaded.stamp:
                        self._loaded = self._read()
                        log.info("API keys reloaded from %s: %d key(s)", self.file, len(self._loaded.digests))
                except (OSError, KeysError) as exc:
                    log.error("API keys not reloaded (the ones in force stay): %s", exc)
        return (*self.fixed, *self._loaded.digests)

    def count(self) -> int:
        return len(self._current())

    def verify(self, presented: str) -> str | None:
        """The key's id when `presented` is a key in force, else None. Compared as SHA-256 digests against every
        key, in constant time."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for known in self._current():
            if hmac.compare_digest(digest, known):
                found = known
        return key_id(found) if found is not None and presented else None
