"""What the doors use of the entry service (service/service.py's Transcriber): the request policy and the two
pipelines. A door reaches it through BentoML's public `bentoml.get_current_service()`."""

from __future__ import annotations

from typing import Protocol, cast

from service.api.realtime import SessionLimits
from service.pipeline.files import FileTranscription
from service.pipeline.policy import Policy
from service.pipeline.streams import StreamTranscription


class Entry(Protocol):
    policy: Policy
    files: FileTranscription
    streams: StreamTranscription
    realtime_limits: SessionLimits


def current() -> Entry:
    """The entry service of this worker process."""
    import bentoml

    return cast(Entry, bentoml.get_current_service())
