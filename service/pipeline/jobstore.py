"""Durable transcription jobs: one SQLite table in ASR_JOBS_DIR, uploads and answers as files beside it.

Every entry worker process opens the same store, so a job's status, answer and cancellation read the same
wherever a call lands, and each process's runner claims queued jobs one at a time (an UPDATE that only one
process can win). A running job holds a lease its runner renews; a job whose lease ran out (its process was
killed, the machine stopped) is queued again once, and the second time it fails with the reason. A stop that
runs the shutdown hook hands its running jobs back at once. Finished jobs keep their answer for the TTL; then
the files go and a row is kept, so an id given out is never unknown (`expired`). A failed job keeps its upload
until then, for BentoML's retry.

States: queued and running read as BentoML's `in_progress`; completed, failed, canceled as BentoML's own.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from service.errors import BadRequest, JobNotFound, Overloaded, RecognizerUnavailable, TooManyJobs

QUEUED, RUNNING, COMPLETED, FAILED, CANCELED = "queued", "running", "completed", "failed", "canceled"
FINISHED = (COMPLETED, FAILED, CANCELED)
BENTOML_STATUS = {QUEUED: "in_progress", RUNNING: "in_progress", COMPLETED: "completed", FAILED: "failed"}
MAX_ATTEMPTS = 2  # a job whose runner vanished is run once more, then failed
OPEN_WAIT_S = 30.0  # how long opening the store waits for other processes opening it
COPY_BYTES = 1024 * 1024  # an upload is copied to the job's folder in pieces of this size

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    fields TEXT NOT NULL,
    upload_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    executed_at REAL,
    completed_at REAL,
    runner TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER,
    media_type TEXT,
    audio_s REAL,
    expired INTEGER NOT NULL DEFAULT 0,
    segments_done INTEGER,
    segments_total INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, created_at);
"""


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    state: str
    fields: dict[str, Any]
    upload_bytes: int
    created_at: float
    executed_at: float | None
    completed_at: float | None
    attempts: int
    status_code: int | None
    media_type: str | None
    audio_s: float | None
    expired: bool
    progress: tuple[int, int] | None = None  # segments recognised, of how many (once the audio is cut)

    def status(self) -> dict[str, Any]:
        """BentoML's task status (its clients read `status`), with what else a caller may want to know."""

        def iso(t: float | None) -> str | None:
            return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()

        return {
            "task_id": self.id,
            "status": "canceled" if self.state == CANCELED else BENTOML_STATUS[self.state],
            "created_at": iso(self.created_at),
            "executed_at": iso(self.executed_at),
            "completed_at": iso(self.completed_at),
            "state": self.state,  # ours: queued and running told apart
            "attempts": self.attempts,
            "audio_s": self.audio_s,
            "expired": self.expired,
            "progress": None
            if self.progress is None
            else {"segments_done": self.progress[0], "segments": self.progress[1]},
        }


def _busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class JobStore:
    def __init__(self, folder: Path, max_jobs: int, ttl_s: float, lease_s: float = 15.0) -> None:
        self.folder, self.max_jobs, self.ttl_s, self.lease_s = folder, max_jobs, ttl_s, lease_s
        (folder / "uploads").mkdir(parents=True, exist_ok=True)
        (folder / "answers").mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + OPEN_WAIT_S
        while True:
            try:
                self._create()
                return
            except sqlite3.OperationalError as exc:
                # Entry processes that start together race to turn a new file to WAL; SQLite answers the loser
                # "database is locked" at once, without waiting its timeout (both hold a read lock and want to
                # write: a deadlock it refuses). The winner is done in milliseconds.
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _create(self) -> None:
        db = sqlite3.connect(self.folder / "jobs.db", timeout=OPEN_WAIT_S, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for column in ("segments_done", "segments_total"):  # a table from before progress was kept
                if column not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column} INTEGER")
        finally:
            db.close()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """One connection per operation (operations run in worker threads), each a transaction."""
        db = sqlite3.connect(self.folder / "jobs.db", timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def upload_path(self, job_id: str) -> Path:
        return self.folder / "uploads" / job_id

    def answer_path(self, job_id: str) -> Path:
        return self.folder / "answers" / job_id

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"],
            owner=row["owner"],
            state=row["state"],
            fields=json.loads(row["fields"]),
            upload_bytes=row["upload_bytes"],
            created_at=row["created_at"],
            executed_at=row["executed_at"],
            completed_at=row["completed_at"],
            attempts=row["attempts"],
            status_code=row["status_code"],
            media_type=row["media_type"],
            audio_s=row["audio_s"],
            expired=bool(row["expired"]),
            progress=None if row["segments_total"] is None else (row["segments_done"], row["segments_total"]),
        )

    def submit(self, fields: dict[str, Any], upload: bytes | BinaryIO, owner: str = "") -> Job:
        """Queue a job: its upload (bytes, or a file copied from its start) written to disk first (a job is never
        queued without it), TooManyJobs when ASR_JOBS_MAX jobs are queued or running."""
        job_id = secrets.token_hex(16)
        path = self.upload_path(job_id)
        partial = path.with_suffix(".part")
        try:
            with partial.open("wb") as out:
                if isinstance(upload, bytes):
                    out.write(upload)
                else:
                    upload.seek(0)
                    shutil.copyfileobj(upload, out, COPY_BYTES)
                size = out.tell()
        except OSError as exc:  # the job folder's disk is full (or gone): the server's trouble, for now
            partial.unlink(missing_ok=True)
            raise Overloaded(f"the job folder has no room for this upload now ({exc.strerror}); retry later") from exc
        partial.replace(path)
        try:
            with self._db() as db:
                (waiting,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state IN (?, ?)", (QUEUED, RUNNING)).fetchone()
                if waiting >= self.max_jobs:
                    raise TooManyJobs(f"{waiting} jobs are queued or running, the most this server keeps")
                db.execute(
                    "INSERT INTO jobs (id, owner, state, fields, upload_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, owner, QUEUED, json.dumps(fields), size, time.time()),
                )
        except sqlite3.OperationalError as exc:  # e.g. "database or disk is full"
            path.unlink(missing_ok=True)
            raise Overloaded(f"the job store cannot take a job now ({exc}); retry later") from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return self.get(job_id, owner)

    def get(self, job_id: str, owner: str = "") -> Job:
        """The job, for its owner only (another key's job is as unknown as an id never given out)."""
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r} (ids are given by POST /transcribe_job/submit)")
        return self._job(row)

    def claim(self, runner: str) -> Job | None:
        """The oldest queued job, now running here under a lease; None when nothing waits."""
        now = time.time()
        with self._db() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = ? ORDER BY created_at LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = ?, runner = ?, lease_until = ?, attempts = attempts + 1, "
                "executed_at = COALESCE(executed_at, ?) WHERE id = ?",
                (RUNNING, runner, now + self.lease_s, now, row["id"]),
            )
            job = db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        return self._job(job)

    def renew(self, job_id: str, runner: str, progress: tuple[int, int] | None = None) -> bool:
        """Extend the lease (and note the progress); False when the job is no longer this runner's to run
        (canceled, handed back)."""
        done, total = progress or (None, None)
        with self._db() as db:
            changed = db.execute(
                "UPDATE jobs SET lease_until = ?, segments_done = COALESCE(?, segments_done), "
                "segments_total = COALESCE(?, segments_total) WHERE id = ? AND state = ? AND runner = ?",
                (time.time() + self.lease_s, done, total, job_id, RUNNING, runner),
            ).rowcount
        return changed == 1

    def finish(
        self, job_id: str, runner: str, status_code: int, media_type: str, body: bytes, audio_s: float | None
    ) -> bool:
        """The answer kept (completed below 400, failed from 400: BentoML's rule); False if the job was
        canceled or taken from this runner meanwhile (the answer is dropped)."""
        path = self.answer_path(job_id)
        partial = path.with_suffix(".part")
        partial.write_bytes(body)
        with self._db() as db:
            changed = db.execute(
                "UPDATE jobs SET state = ?, status_code = ?, media_type = ?, audio_s = ?, completed_at = ?, "
                "lease_until = NULL WHERE id = ? AND state = ? AND runner = ?",
                (COMPLETED if status_code < 400 else FAILED, status_code, media_type, audio_s, time.time(),
                 job_id, RUNNING, runner),
            ).rowcount  # fmt: skip
            if changed:
                partial.replace(path)
        if not changed:
            partial.unlink(missing_ok=True)
            return False
        if status_code < 400:  # a failed job keeps its upload until it expires, for a retry
            self.upload_path(job_id).unlink(missing_ok=True)
        return True

    def retry(self, job_id: str, owner: str = "") -> Job:
        """BentoML's retry: a failed job's upload and fields again, as a new job."""
        job = self.get(job_id, owner)
        path = self.upload_path(job_id)
        if job.state != FAILED or job.expired or not path.is_file():
            raise BadRequest(
                f"job {job_id} is {job.state}: only a failed job whose upload is kept can be retried", "task_id"
            )
        return self.submit(job.fields, path.read_bytes(), owner)

    def answer(self, job_id: str, owner: str = "") -> tuple[Job, bytes | None]:
        job = self.get(job_id, owner)
        if job.state not in (COMPLETED, FAILED) or job.expired:
            return job, None
        return job, self.answer_path(job_id).read_bytes()

    def cancel(self, job_id: str, owner: str = "") -> Job:
        """Queued or running -> canceled (its runner sees it at its next renewal and stops); a finished job is
        left as it is."""
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET state = ?, completed_at = ?, lease_until = NULL WHERE id = ? AND owner = ? "
                "AND state IN (?, ?)",
                (CANCELED, time.time(), job_id, owner, QUEUED, RUNNING),
            )
        job = self.get(job_id, owner)
        if job.state == CANCELED:
            self.upload_path(job_id).unlink(missing_ok=True)
        return job

    def hand_back(self, runner: str) -> int:
        """A runner that stops cleanly queues its running jobs again, as they were (the attempt not counted)."""
        with self._db() as db:
            return db.execute(
                "UPDATE jobs SET state = ?, runner = NULL, lease_until = NULL, attempts = attempts - 1 "
                "WHERE state = ? AND runner = ?",
                (QUEUED, RUNNING, runner),
            ).rowcount

    def recover(self) -> tuple[int, list[str]]:
        """Running jobs whose lease ran out (their runner died): queued again, or failed after MAX_ATTEMPTS.
        Returns (requeued, ids failed)."""
        now = time.time()
        lost_twice = RecognizerUnavailable(f"the server stopped while this job ran, {MAX_ATTEMPTS} times")
        body = json.dumps(lost_twice.body()).encode()
        with self._db() as db:
            lost = db.execute(
                "SELECT id, attempts FROM jobs WHERE state = ? AND lease_until < ?", (RUNNING, now)
            ).fetchall()
            again = [r["id"] for r in lost if r["attempts"] < MAX_ATTEMPTS]
            failed = [r["id"] for r in lost if r["attempts"] >= MAX_ATTEMPTS]
            for job_id in again:
                db.execute(
                    "UPDATE jobs SET state = ?, runner = NULL, lease_until = NULL WHERE id = ?", (QUEUED, job_id)
                )
            for job_id in failed:
                self.answer_path(job_id).write_bytes(body)
                db.execute(
                    "UPDATE jobs SET state = ?, status_code = ?, media_type = 'application/json', "
                    "completed_at = ?, lease_until = NULL WHERE id = ?",
                    (FAILED, int(lost_twice.status), now, job_id),
                )
        for job_id in failed:
            self.upload_path(job_id).unlink(missing_ok=True)
        return len(again), failed

    def expire(self) -> int:
        """Finished jobs older than the TTL: answer and upload deleted, the row kept (`expired`)."""
        cutoff = time.time() - self.ttl_s
        with self._db() as db:
            old = [
                r["id"]
                for r in db.execute(
                    "SELECT id FROM jobs WHERE expired = 0 AND state IN (?, ?, ?) AND completed_at < ?",
                    (*FINISHED, cutoff),
                )
            ]
            db.executemany("UPDATE jobs SET expired = 1 WHERE id = ?", [(i,) for i in old])
        for job_id in old:
            self.answer_path(job_id).unlink(missing_ok=True)
            self.upload_path(job_id).unlink(missing_ok=True)
        return len(old)

    def counts(self) -> dict[str, int]:
        with self._db() as db:
            return {r["state"]: r["n"] for r in db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}
