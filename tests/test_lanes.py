"""The CPU scheduler of session runs (service/recognition/lanes.py), with stand-in runs that record what ran at
once. The recognizer's lanes on a real graph: tests/test_recognizer.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from service.recognition.lanes import Cores


class Recorder:
    """Stand-in runs: each sleeps, and records whether it ran solo and what was running when it started or
    started while it ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: list[tuple[str, bool]] = []
        self.peak = 0  # most runs at once
        self.beside: dict[str, set[tuple[str, bool]]] = {}
        self.solo: dict[str, bool] = {}

    def job(
        self,
        name: str,
        seconds: float = 0.05,
        started: threading.Event | None = None,
        release: threading.Event | None = None,
    ) -> Any:
        """A run of `seconds`, or (with `release`) one that lasts until the test releases it; `started` is set
        once it runs."""

        def run(solo: bool) -> str:
            with self.lock:
                self.beside[name], self.solo[name] = set(self.running), solo
                for other, _ in self.running:
                    self.beside[other].add((name, solo))
                self.running.append((name, solo))
                self.peak = max(self.peak, len(self.running))
            if started is not None:
                started.set()
            if release is not None:
                assert release.wait(30)
            else:
                time.sleep(seconds)
            with self.lock:
                self.running.remove((name, solo))
            return name

        return run


def test_a_lone_run_runs_solo() -> None:
    cores, rec = Cores(2), Recorder()
    for i in range(5):  # one client: one run at a time
        assert cores.run([rec.job(f"r{i}")]) == [f"r{i}"]
    assert list(rec.solo.values()) == [True] * 5
    assert cores.solo_runs == 5 and cores.lane_runs == 0


def test_runs_asked_for_together_share_the_lanes_and_keep_their_order() -> None:
    cores, rec = Cores(2), Recorder()
    names = [f"r{i}" for i in range(6)]
    assert cores.run([rec.job(n) for n in names]) == names
    assert sum(not solo for solo in rec.solo.values()) >= 5  # all but perhaps the last in lanes
    assert rec.peak == 2
    assert all(not rec.beside[name] for name, solo in rec.solo.items() if solo)  # nothing beside a solo run


def queued(cores: Cores, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(cores._queue) < count and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(cores._queue) >= count


def test_a_run_asked_for_during_a_solo_run_waits_for_it() -> None:
    """`a` runs solo (it was alone) and holds every core until released; `b`, asked for meanwhile, stays queued:
    it is not started beside `a`, and runs when `a` ends. Events, not sleeps, order the two."""
    cores, rec = Cores(2), Recorder()
    started, release = threading.Event(), threading.Event()
    first = threading.Thread(target=cores.run, args=([rec.job("a", started=started, release=release)],))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=cores.run, args=([rec.job("b", 0.01)],))
    second.start()
    queued(cores, 1)
    time.sleep(0.1)  # time for a wrong scheduler to start b beside a
    assert "b" not in rec.solo and len(cores._queue) == 1
    release.set()
    first.join()
    second.join()
    assert rec.solo["a"] is True and not rec.beside["a"] and rec.solo["b"] is True


def test_exclusive_runs_wait_for_the_lanes_and_hold_every_core() -> None:
    """Two runs hold both lanes until released; an exclusive run asked for meanwhile waits (it is not started while
    they run), then runs alone."""
    cores, rec = Cores(2), Recorder()
    started = [threading.Event(), threading.Event()]
    release = threading.Event()
    jobs = [rec.job(f"l{i}", started=started[i], release=release) for i in range(2)]
    lanes = threading.Thread(target=cores.run, args=(jobs,))
    lanes.start()
    assert all(e.wait(30) for e in started) and rec.peak == 2
    exclusive = threading.Thread(target=cores.run, args=([rec.job("x", 0.02)],), kwargs={"exclusive": True})
    exclusive.start()
    queued(cores, 1)
    time.sleep(0.1)  # time for a wrong scheduler to start x beside the lanes
    assert "x" not in rec.solo
    release.set()
    lanes.join()
    exclusive.join()
    assert rec.solo["x"] is True and not rec.beside["x"]


def test_one_lane_runs_everything_solo_one_at_a_time() -> None:
    cores, rec = Cores(1), Recorder()
    threads = [threading.Thread(target=cores.run, args=([rec.job(f"r{i}", 0.01)],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(rec.solo.values()) and rec.peak == 1


def test_a_failing_run_raises_in_its_caller_after_the_others_ran() -> None:
    cores, rec = Cores(2), Recorder()

    def boom(solo: bool) -> str:
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError, match="kernel failed"):
        cores.run([rec.job("a"), boom, rec.job("b")])
    assert set(rec.solo) == {"a", "b"}
    assert cores.run([rec.job("c")]) == ["c"]  # the lanes still work
