"""The entry's CPU work off the event loop: the VAD's passes over files, and streams' VAD windows and features."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class CpuThreads:
    """One thread per core, not one per request in flight: the work is CPU-bound (more threads than cores gain
    nothing), and each thread keeps its blocks in its own malloc arena (docs/benchmarks.md, "The VAD's threads",
    has what anyio's 40 shared threads cost)."""

    def __init__(self, count: int = 0) -> None:
        self.pool = ThreadPoolExecutor(count or len(os.sched_getaffinity(0)), thread_name_prefix="cpu")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
