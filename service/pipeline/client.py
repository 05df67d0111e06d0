"""The recognizer as the pipeline sees it: a small protocol (call a model's batch API with a list of arrays; ask
its status), and `Recognition` on top of it, which sends a request's items through a model's batch queue a
window at a time and keeps the service's readiness. service/remote.py implements the protocol over BentoML's
dependency call; tests can give any object with these two methods."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import numpy as np
import numpy.typing as npt

from service import metrics
from service.audio.spill import Samples
from service.catalog import ServedModel
from service.errors import NotReady

STATUS_TIMEOUT_S = 5  # a recognizer that cannot start must not hang readiness probes
CPU_WINDOW = 4


class RecognizerError(Exception):
    """A batch call failed for another reason than the two below (answered as an internal error)."""


class RecognizerGone(RecognizerError):
    """The recognizer process died or its connection failed (BentoML's arbiter restarts it): retryable."""


class RecognizerBusy(RecognizerError):
    """The batch queue refused the call: it could not finish within its latency bound."""


class RecognizerClient(Protocol):
    async def call(self, method: str, items: list[npt.NDArray[np.float32]]) -> list[Any]:
        """`items` through the recognizer's batch API `method`, one result per item, in order."""

    async def status(self) -> dict[str, Any]:
        """The recognizer's status: ready, reason, permanent, providers, gpu, models."""


@dataclass
class Readiness:
    """Why the service was last found not ready (Recognition updates it; /readyz answers with it)."""

    reason: str = "the service is starting"
    permanent: bool = False  # True when the cause cannot clear by itself (no Retry-After then)


def segments_in_flight(gpu: bool, batch_max: int, paced: bool = False) -> int:
    """Segments of one request in the recognizer's queue at once: a long file neither fills the queue past its
    latency bound by itself (a 10-minute file is 20 segments) nor makes shorter requests wait behind all of it.
    A GPU runs a whole batch at once: there a request may fill one. `paced` (jobs): one at a time on a CPU, half
    a batch on a GPU, so interactive requests always find room beside a job."""
    if paced:
        return max(1, batch_max // 2) if gpu else 1
    return max(CPU_WINDOW, batch_max) if gpu else CPU_WINDOW


class Recognition:
    """Items of one request through a model's batch queue, at most `window` in flight; and readiness."""

    def __init__(
        self, client: RecognizerClient, readiness: Readiness, batch_max: int, gpu: bool, paced: bool = False
    ) -> None:
        self.client, self.readiness, self.batch_max, self.paced = client, readiness, batch_max, paced
        # Requests check readiness until it is first true, then never again: a loaded model does not go away,
        # and a recognizer that dies shows as 503 `unavailable` from the call itself. Probes always ask.
        self.ready = False
        self.window = segments_in_flight(gpu, batch_max, paced)  # until the recognizer says where it landed

    async def status(self) -> dict[str, Any]:
        """The recognizer's status (not ready, with the reason, when it does not answer)."""
        try:
            with anyio.fail_after(STATUS_TIMEOUT_S):
                status = await self.client.status()
        except Exception:
            reason = "the recognizer does not answer (is the model loadable? the server log says why)"
            status = {"ready": False, "reason": reason, "providers": [], "models": []}
        if status["ready"] is True:
            self.ready = True
            self.window = segments_in_flight(bool(status.get("gpu")), self.batch_max, self.paced)
        self.readiness.reason, self.readiness.permanent = status["reason"], bool(status.get("permanent"))
        return status

    async def check_ready(self) -> None:
        if not self.ready:
            status = await self.status()
            if not status["ready"]:
                raise NotReady(f"the service is not ready: {status['reason']}")

    async def run(
        self,
        served: ServedModel,
        items: Sequence[Samples],
        method: str,
        progress: Callable[[int, int], None] | None = None,
        then: Callable[[Any], Awaitable[Any]] | None = None,
    ) -> list[Any]:
        """Every item through the model's batch queue `method`, at most `window` at a time; results in order.
        An item on disk (long audio) is read when it is sent; `then(result)` (beam search of a segment's
        log-probabilities) runs while the item still holds its place in the window: a request holds at most
        `window` items' audio and raw results at once, however long it is. `progress(done, total)` after each
        item is done (a job's status shows it)."""
        in_flight = metrics.SEGMENTS_IN_FLIGHT.labels(model=served.name)

        async def call(batch: Sequence[Samples]) -> list[Any]:
            in_flight.inc(len(batch))
            try:
                return await self.client.call(method, [np.asarray(item) for item in batch])  # (no copy in memory)
            finally:
                in_flight.dec(len(batch))

        if not items:  # the VAD heard no speech in a long recording
            return []
        if len(items) <= self.window:
            results = await call(items)
            if then is not None:
                results = list(await asyncio.gather(*(then(r) for r in results)))
            if progress:
                progress(len(items), len(items))
            return results
        window = asyncio.Semaphore(self.window)
        done = [0]

        async def one(item: Samples) -> Any:
            async with window:
                result = (await call([item]))[0]
                if then is not None:
                    result = await then(result)
            done[0] += 1
            if progress:
                progress(done[0], len(items))
            return result

        tasks = [asyncio.ensure_future(one(item)) for item in items]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:  # after a failure, do not leave the rest running
                task.cancel()
