"""A bounded load generator for 127.0.0.1: N concurrent clients for T seconds, with process watching."""

from __future__ import annotations

import asyncio
import glob
import os
import statistics
import time
from dataclasses import dataclass, field

import httpx
import psutil


@dataclass
class SoakReport:
    seconds: float
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # transport errors
    rss_mb: list[float] = field(default_factory=list)  # all server processes together, sampled every second
    fds: list[float] = field(default_factory=list)
    temp_files: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(n for s, n in self.statuses.items() if s != 200)

    def growth(self, series: list[float], warmup: float = 0.2) -> float:
        """Relative growth of the median from just after warm-up (the next 20 % of the samples after the first
        `warmup`) to the end (the last 25 %). Medians, not maxima: RSS swings +-20 MB from one second to the
        next at saturation (malloc arenas, batches in flight), which a 60-s soak's maxima took for growth; a
        leak moves the median."""
        start, end = self._medians(series, warmup)
        return (end - start) / start if start else 0.0

    def rise(self, series: list[float], warmup: float = 0.2) -> float:
        """The same growth in the series' own unit (MB, file descriptors)."""
        start, end = self._medians(series, warmup)
        return end - start

    @staticmethod
    def _medians(series: list[float], warmup: float) -> tuple[float, float]:
        if len(series) < 10:
            return 0.0, 0.0
        n = len(series)
        start = statistics.median(series[int(n * warmup) : int(n * (warmup + 0.2)) + 1])
        return start, statistics.median(series[-max(1, n // 4) :])


def _usage(procs: list[psutil.Process], tmp: str) -> tuple[float, int, int]:
    rss, fds = 0.0, 0
    for p in procs:
        try:
            rss += p.memory_info().rss / 2**20
            fds += p.num_fds()
        except psutil.NoSuchProcess:
            pass
    files = [f for f in glob.glob(tmp + "/bentoml-request-*/**", recursive=True) if os.path.isfile(f)]
    return rss, fds, len(files)


async def soak(
    url: str, payloads: list[bytes], seconds: float, concurrency: int, procs: list[psutil.Process], tmp: str
) -> SoakReport:
    report = SoakReport(seconds)
    deadline = time.monotonic() + seconds

    async def client(k: int) -> None:
        async with httpx.AsyncClient(timeout=120) as c:
            i = k
            while time.monotonic() < deadline:
                data = payloads[i % len(payloads)]
                i += concurrency
                t = time.monotonic()
                try:
                    r = await c.post(url + "/transcribe", files={"audio": ("a.wav", data, "audio/wav")})
                    report.statuses[r.status_code] = report.statuses.get(r.status_code, 0) + 1
                    report.latencies.append(time.monotonic() - t)
                except httpx.HTTPError as exc:
                    report.errors.append(repr(exc))
                report.requests += 1

    async def watch() -> None:
        while time.monotonic() < deadline:
            rss, fds, files = _usage(procs, tmp)
            report.rss_mb.append(rss)
            report.fds.append(fds)
            report.temp_files.append(files)
            await asyncio.sleep(1)

    await asyncio.gather(watch(), *[client(k) for k in range(concurrency)])
    return report
