"""CPU lanes: the recognizer's session runs on the CPU, scheduled so that the cores are never idle and never
oversubscribed.

ONNX Runtime spreads one run over every core, but a Conformer's run is a long chain of small operators, each
ending with its threads waiting for each other: on the 2-core VMs of this project two threads ran one segment
at 1.5x the speed of one, while two single-thread runs side by side did 2.0x (docs/benchmarks.md). So each
model has two sessions on the CPU: `solo` (every core: the lowest latency for one segment) and `lane` (one
thread, run from several threads at once). Every run of the process goes through one `Cores`:

- `lanes` threads take segments in the order they came (a request's longest first), whichever batch call
  brought them, so a lane that frees takes the next segment at once (BentoML's dispatcher may hand over a new
  batch while another still runs: patches._concurrent_batches).
- A segment runs solo when it is alone (no other run, nothing waiting): a single client gets every core.
  While a solo run goes, the rest wait for it. (Sending a lone segment to a lane when the recent load was
  high, so that the next one could start beside it at once, measured no better: docs/benchmarks.md.)
- Exclusive runs (streaming buffers: a session of every core) wait until nothing else runs, and hold the cores.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class _Job(Generic[T]):
    fn: Callable[[bool], T]  # called with True to run solo (every core), False in a lane (one thread)
    exclusive: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class Cores:
    """Runs jobs on `lanes` threads (see the module's docstring). lanes=1: one run at a time, always solo."""

    def __init__(self, lanes: int) -> None:
        self.lanes = max(1, lanes)
        self._cond = threading.Condition()
        self._queue: deque[_Job[Any]] = deque()
        self._in_lanes = 0
        self._solo = False  # a solo or exclusive run holds every core
        self.solo_runs = self.lane_runs = 0
        for i in range(self.lanes):
            threading.Thread(target=self._work, name=f"lane-{i}", daemon=True).start()

    def run(self, fns: Sequence[Callable[[bool], T]], exclusive: bool = False) -> list[T]:
        """Each fn(solo) on the cores; results in order (an exception of one is raised after all have run)."""
        jobs = [_Job(fn, exclusive) for fn in fns]
        with self._cond:
            self._queue.extend(jobs)
            self._cond.notify_all()
        for job in jobs:
            job.done.wait()
        failed = next((job.error for job in jobs if job.error is not None), None)
        if failed is not None:
            raise failed
        return [job.value for job in jobs]

    def _ready(self) -> bool:
        if not self._queue or self._solo:
            return False
        return not self._queue[0].exclusive or self._in_lanes == 0

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._ready)
                job = self._queue.popleft()
                alone = self._in_lanes == 0 and not self._queue
                solo = job.exclusive or self.lanes == 1 or alone
                if solo:
                    self._solo, self.solo_runs = True, self.solo_runs + 1
                else:
                    self._in_lanes, self.lane_runs = self._in_lanes + 1, self.lane_runs + 1
            try:
                job.value = job.fn(solo)
            except BaseException as exc:  # handed to the caller
                job.error = exc
            finally:
                with self._cond:
                    if solo:
                        self._solo = False
                    else:
                        self._in_lanes -= 1
                    self._cond.notify_all()
                job.done.set()
