"""A user's BentoML service that depends on this ASR service by import: it runs the service (entry and
recognizer) inside itself (tests/test_clients.py serves it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml

from service.service import Transcriber


@bentoml.service
class RelayByImport:
    asr = bentoml.depends(Transcriber)

    @bentoml.api
    async def relay(self, audio: Path, response_format: str = "json", timestamps: bool = False) -> dict[str, Any]:
        value = await self.asr.to_async.transcribe(audio=audio, response_format=response_format, timestamps=timestamps)
        return {"type": type(value).__name__, "value": value if isinstance(value, str) else value.model_dump()}
