"""A user's BentoML service that depends on this ASR service by URL (tests/test_clients.py serves it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bentoml


@bentoml.service
class RelayByUrl:
    asr = bentoml.depends(url=os.environ["ASR_URL"])

    @bentoml.api
    async def relay(self, audio: Path, response_format: str = "json", timestamps: bool = False) -> dict[str, Any]:
        value = await self.asr.to_async.transcribe(audio=audio, response_format=response_format, timestamps=timestamps)
        return {"type": type(value).__name__, "value": value}
