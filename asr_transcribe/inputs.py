"""The audio files under the paths given, and where each one's transcript goes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# The usual names of the containers the service decodes (libsndfile's and FFmpeg's: service/audio/decode.py and
# containers.py). The service sniffs the bytes and never trusts a name; here the name only picks what to send.
EXTENSIONS = frozenset(
    {
        ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
        ".caf", ".w64", ".rf64",
        ".m4a", ".m4b", ".mp4", ".aac", ".webm", ".weba", ".mka", ".mkv", ".amr", ".3gp",
    }
)  # fmt: skip

# --format -> the service's response_format and the transcript file's extension
FORMATS = {"txt": ("text", ".txt"), "srt": ("srt", ".srt"), "vtt": ("vtt", ".vtt"), "json": ("json", ".json")}


class InputError(Exception):
    """A path that cannot be transcribed as asked (missing, not audio, two inputs onto one output)."""


@dataclass(frozen=True)
class Item:
    source: Path  # the audio file, resolved
    output: Path  # its transcript, relative to the output folder

    @property
    def key(self) -> str:
        return str(self.source)


def find(paths: Iterable[Path], fmt: str) -> list[Item]:
    """Every audio file among `paths`: a file as given (whatever its name), a folder searched recursively for the
    extensions above (hidden files and folders skipped). A folder's files keep their place under the folder's
    name; a file given alone goes to the top. Sorted, so runs and progress are repeatable."""
    suffix = FORMATS[fmt][1]
    items: dict[Path, Item] = {}
    for given in paths:
        if given.is_dir():
            root = given.resolve()
            found = sorted(
                p
                for p in root.rglob("*")
                if p.is_file()
                and p.suffix.lower() in EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
            pairs = [(p, Path(root.name) / p.relative_to(root)) for p in found]
        elif given.is_file():
            pairs = [(given.resolve(), Path(given.name))]
        else:
            raise InputError(f"{given}: no such file or folder")
        for source, relative in pairs:
            output = relative.with_suffix(suffix)  # x.mp4 -> x.srt, as players look for it
            other = items.get(output)
            if other is not None and other.source != source:
                raise InputError(f"{other.source} and {source} would both be written to {output}")
            items[output] = Item(source, output)
    return sorted(items.values(), key=lambda item: str(item.output))
