"""The pipeline's recognizer client (service/pipeline/client.py) over BentoML's dependency call: the entry's
`bentoml.depends` proxy of the recognizer service, its transport errors turned into the pipeline's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import bentoml
import numpy as np
import numpy.typing as npt

from service.pipeline.client import RecognizerBusy, RecognizerError, RecognizerGone

log = logging.getLogger("asr")
OVERLOADED = 503  # what BentoML's batch queue answers past its latency bound


class RemoteRecognizer:
    def __init__(self, proxy: Callable[[], Any]) -> None:
        # the recognizer: BentoML's dependency proxy (a local instance when run in process), asked for at each call
        # (BentoML opens the proxy after the entry's __init__)
        self.proxy = proxy

    async def call(self, method: str, items: list[npt.NDArray[np.float32]]) -> list[Any]:
        remote = getattr(self.proxy().to_async, method)
        try:
            try:
                return list(await remote(items))
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled keep-alive connection the recognizer's server closed (idle timeout) just as it was
                # reused: the call never arrived. The call is a pure function of the audio: try once more on a
                # fresh connection; a recognizer that really died fails again and is reported as such.
                log.info("recognizer call retried once: %r", exc)
                await asyncio.sleep(0.05)
                return list(await remote(items))
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise RecognizerGone(repr(exc)) from exc
        except bentoml.exceptions.BentoMLException as exc:
            # The batch queue refuses work it cannot finish within its latency bound (503 "overloaded");
            # through the dependency call it arrives as an exception, not a status.
            if getattr(exc, "error_code", None) == OVERLOADED or "overload" in str(exc).lower():
                raise RecognizerBusy(str(exc)) from exc
            raise RecognizerError(str(exc)) from exc

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.proxy().to_async.status()
        return status
