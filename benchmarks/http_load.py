"""Concurrent HTTP clients for the benchmarks: each request's latency, and percentiles of them."""

from __future__ import annotations

import asyncio
import time

import httpx


async def clients(url: str, payloads: list[bytes], concurrency: int) -> list[float]:
    """`concurrency` clients share the payload queue; returns each request's latency."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            data = queue.get_nowait()
            t = time.perf_counter()
            r = await http.post(url + "/transcribe", files={"audio": ("a.wav", data, "audio/wav")})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*[client(http) for _ in range(concurrency)])
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
