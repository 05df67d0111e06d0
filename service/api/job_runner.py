"""The entry process's job runner: claims queued jobs from the shared store (service/pipeline/jobstore.py), runs
each through the /transcribe door's own code with the jobs' limits, renews its lease while it runs and stops it
when the job was canceled (the recognition is cancelled: its segments leave the batch queue, as an abandoned
request's do). Runs as a task on the entry's event loop, started and stopped by the service's hooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any, BinaryIO

import anyio

from service.errors import ASRError, JobNotFound
from service.pipeline.jobstore import Job, JobStore

log = logging.getLogger("asr")
RENEW_S = 1.0  # how often a running job's lease is renewed and its cancellation looked for
HOUSEKEEPING_S = 10.0  # how often lost jobs are recovered and old answers expired

# A job's work: (job, its upload file, state) -> (HTTP status, media type, body); `state.asr_audio_s`: the audio's
# length. The work owns the file (the decoding closes it).
Execute = Callable[[Job, BinaryIO, SimpleNamespace], Coroutine[Any, Any, tuple[int, str, bytes]]]


class JobRunner:
    def __init__(self, store: JobStore, execute: Execute, slots: int) -> None:
        self.store, self.execute, self.slots = store, execute, slots
        self.id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._serve(), name="asr-jobs")

    def wake(self) -> None:
        """A job was submitted here: claim it now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """A clean stop: the running jobs are cancelled and handed back to the queue (they run again after the
        restart, or in another worker)."""
        if self._loop_task:
            self._loop_task.cancel()
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)
        handed = await anyio.to_thread.run_sync(self.store.hand_back, self.id)
        if handed:
            log.info("jobs: %d running job(s) handed back to the queue at shutdown", handed)

    async def _serve(self) -> None:
        last_housekeeping = 0.0
        while True:
            try:
                if time.monotonic() - last_housekeeping >= HOUSEKEEPING_S:
                    last_housekeeping = time.monotonic()
                    requeued, failed = await anyio.to_thread.run_sync(self.store.recover)
                    if requeued or failed:
                        log.warning(
                            "jobs: %d lost job(s) queued again, %d failed after their last try", requeued, len(failed)
                        )
                    await anyio.to_thread.run_sync(self.store.expire)
                while len(self.running) < self.slots:
                    job = await anyio.to_thread.run_sync(self.store.claim, self.id)
                    if job is None:
                        break
                    self.running[job.id] = asyncio.get_running_loop().create_task(self._run(job))
            except asyncio.CancelledError:
                raise
            except Exception:  # the store unreadable for a moment (disk full, locked): try again later
                log.exception("jobs: the job store failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    async def _run(self, job: Job) -> None:
        try:
            data: BinaryIO | None = self.store.upload_path(job.id).open("rb")
        except OSError:
            data = None
        try:
            if data is None:  # canceled (its upload deleted) between the claim and now, or the disk lost it
                await self._finish(job, *_error_answer(JobNotFound("the upload is gone")))
                return
            state = SimpleNamespace()
            work: asyncio.Task[tuple[int, str, bytes]] = asyncio.get_running_loop().create_task(
                self.execute(job, data, state)
            )
            del data
            while True:
                done, _ = await asyncio.wait({work}, timeout=RENEW_S)
                if done:
                    break
                progress = getattr(state, "progress", None)
                if not await anyio.to_thread.run_sync(self.store.renew, job.id, self.id, progress):
                    work.cancel()  # canceled (or no longer ours): stop recognising at once
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await work
                    log.info("jobs: %s stopped (canceled)", job.id)
                    return
            try:
                status, media, body = work.result()
            except Exception:
                log.exception("jobs: %s failed", job.id)
                status, body, media = _error_answer(ASRError("the job failed inside the service"))
            await self._finish(job, status, body, media, getattr(state, "asr_audio_s", None))
        finally:
            self.running.pop(job.id, None)
            self._wake.set()  # a slot is free

    async def _finish(
        self, job: Job, status: int, body: bytes, media: str | None, audio_s: float | None = None
    ) -> None:
        kept = await anyio.to_thread.run_sync(
            self.store.finish, job.id, self.id, status, media or "application/json", body, audio_s
        )
        log.info("jobs: %s %s (%d)", job.id, "done" if kept else "dropped (canceled meanwhile)", status)


def _error_answer(error: ASRError) -> tuple[int, bytes, str]:
    """A job's answer for an error of its own (status, body, media type), in the service's error shape."""
    return int(error.status), json.dumps(error.body()).encode(), "application/json"
