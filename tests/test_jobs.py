"""Jobs (POST /transcribe_job/submit and BentoML's task routes) through a real `bentoml serve`: a job answers as
/transcribe does (JSON with word times, SRT), through BentoML's own clients and curl; its status moves through
BentoML's names; cancel stops the recognition; the queue's bound is a 429; a URL in `audio` is a 400 and is never
fetched; kill -9 mid-job and a restart on the same folder: the running job runs again, the queued one runs, no id
is unknown; another API key cannot see a job."""

from __future__ import annotations

import asyncio
import http.server
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import httpx
import pytest

from tests import speech
from tests.audio_files import encode
from tests.conftest import Exported
from tests.graphs import slow_graph, store_with_graph
from tests.server import Server
from tests.test_readme import example
from tests.test_under_load import segment_counts

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")]
RATE = 16000


def long_file(seconds: float) -> bytes:
    audio, _ = speech.joined(speech.SENTENCES * 60, pause_s=0.6)
    return encode(audio[: int(seconds * RATE)], RATE)


@pytest.fixture(scope="module")
def server(tiny_bpe: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("jobs")
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "ASR_JOBS_DIR": str(folder / "jobs")}
    with Server(env, folder / "server.log") as s:
        yield s


def test_a_job_answers_as_transcribe_does(server: Server, tmp_path: Path) -> None:
    """A 10-minute file through BentoML's async client: JSON with word times and SRT, each equal to
    /transcribe's answer to the same upload; the status moves from in_progress to completed."""
    path = tmp_path / "ten.wav"
    path.write_bytes(long_file(600))

    async def through_the_client() -> tuple[list[str], Any, str, Any]:
        async with bentoml.AsyncHTTPClient(server.url, timeout=300) as client:
            as_json = await client.transcribe_job.submit(audio=path, timestamps=True)
            as_srt = await client.transcribe_job.submit(audio=path, response_format="srt")
            seen = [(await as_json.get_status()).value]
            while seen[-1] == "in_progress" or (await as_srt.get_status()).value == "in_progress":
                await asyncio.sleep(0.2)
                seen.append((await as_json.get_status()).value)
            return seen, await as_json.get(), as_srt.id, await as_srt.get()

    seen, got_json, srt_id, got_srt = asyncio.run(through_the_client())
    assert seen[0] == "in_progress" and seen[-1] == "completed"
    direct = httpx.post(
        server.url + "/transcribe",
        files={"audio": ("ten.wav", path.read_bytes())},
        data={"timestamps": "true"},
        timeout=300,
    ).json()
    assert got_json == direct and direct["duration_s"] == pytest.approx(600, abs=0.01) and got_json["words"]
    srt = httpx.post(
        server.url + "/transcribe",
        files={"audio": ("ten.wav", path.read_bytes())},
        data={"response_format": "srt"},
        timeout=300,
    ).text
    assert got_srt == srt and srt.startswith("1\n")
    # the same over plain HTTP: the status says how long the audio was; the answer is the SRT itself
    status = httpx.get(server.url + "/transcribe_job/status", params={"task_id": srt_id}).json()
    assert status["status"] == "completed" and status["audio_s"] == pytest.approx(600, abs=0.01)
    answer = httpx.get(server.url + "/transcribe_job/get", params={"task_id": srt_id})
    assert (
        answer.status_code == 200
        and answer.text == srt
        and answer.headers["content-type"].startswith("application/x-subrip")
    )


def test_a_bad_job_fails_with_the_error_transcribe_gives(server: Server) -> None:
    submit = httpx.post(
        server.url + "/transcribe_job/submit", files={"audio": ("a.wav", b"RIFF\x00\x00\x00\x00WAVEjunk")}
    )
    assert submit.status_code == 200
    job_id = submit.json()["task_id"]
    deadline = time.monotonic() + 60
    while (
        httpx.get(server.url + "/transcribe_job/status", params={"task_id": job_id}).json()["status"] == "in_progress"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    got = httpx.get(server.url + "/transcribe_job/get", params={"task_id": job_id})
    direct = httpx.post(server.url + "/transcribe", files={"audio": ("a.wav", b"RIFF\x00\x00\x00\x00WAVEjunk")})
    assert (got.status_code, got.json()) == (direct.status_code, direct.json()) and got.status_code in (400, 415)
    # what is refused at once: an unknown model, an unknown id, a missing id, a wrong method
    bad = httpx.post(
        server.url + "/transcribe_job/submit", files={"audio": ("a.wav", long_file(2))}, data={"model": "nope"}
    )
    assert bad.status_code == 400 and bad.json()["error"] == "unknown_model"
    unknown = httpx.get(server.url + "/transcribe_job/status", params={"task_id": "f" * 32})
    assert unknown.status_code == 404 and unknown.json()["error"] == "job_not_found"
    assert httpx.get(server.url + "/transcribe_job/get").status_code == 400
    assert httpx.delete(server.url + "/transcribe_job/cancel", params={"task_id": job_id}).status_code == 405


def test_a_url_in_audio_is_refused_and_never_fetched(server: Server) -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(long_file(2))

        def log_message(self, *args: Any) -> None:
            pass

    source = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=source.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{source.server_port}/speech.wav"
    try:
        as_form = httpx.post(server.url + "/transcribe_job/submit", data={"audio": url})
        as_json = httpx.post(server.url + "/transcribe_job/submit", json={"audio": url})
        direct = httpx.post(server.url + "/transcribe_job", json={"audio": url})
    finally:
        source.shutdown()
    assert [r.status_code for r in (as_form, as_json, direct)] == [400, 400, 400]
    assert all(r.json()["error"] == "bad_request" for r in (as_form, as_json, direct))
    assert hits == []


@pytest.fixture(scope="module")
def slow(tiny_bpe: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str], Path]]:
    """A model as slow as the `medium` architecture (a 10-minute job runs for many seconds); 3 jobs at most; two
    entry processes, each running one job at a time."""
    folder = tmp_path_factory.mktemp("slow-jobs")
    home = store_with_graph(tiny_bpe, folder / "home", slow_graph)
    env = {
        "ASR_MODEL": tiny_bpe.tag,
        "BENTOML_HOME": str(home),
        "ASR_DEVICE": "cpu",
        "ASR_JOBS_DIR": str(folder / "jobs"),
        "ASR_JOBS_MAX": "3",
        "ASR_SEGMENTER": "energy",
        "ASR_ENTRY_WORKERS": "2",  # status and cancel must reach a job whichever process answers
    }
    with Server(env, folder / "server.log") as s:
        yield s, env, folder


def submit(url: str, data: bytes) -> str:
    r = httpx.post(url + "/transcribe_job/submit", files={"audio": ("a.wav", data)}, timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["task_id"])


def status(url: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(url + "/transcribe_job/status", params={"task_id": job_id}, timeout=30)
    assert r.status_code == 200, r.text  # never a 404 for an id the server gave out
    return dict(r.json())


def wait_state(url: str, job_id: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (now := status(url, job_id))["state"] not in states:
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    return now


def test_cancel_stops_the_recognition_and_the_queue_is_bounded(slow: tuple[Server, dict[str, str], Path]) -> None:
    server, _, _ = slow
    ten = long_file(600)
    running = submit(server.url, ten)
    wait_state(server.url, running, {"running"})
    queued = [submit(server.url, ten), submit(server.url, ten)]
    refused = httpx.post(server.url + "/transcribe_job/submit", files={"audio": ("a.wav", ten)})
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_jobs" and refused.headers["retry-after"]
    for job_id in queued:  # one waits, the other runs in the second process
        assert httpx.put(server.url + "/transcribe_job/cancel", params={"task_id": job_id}).status_code == 200
    deadline = time.monotonic() + 120
    while (progress := status(server.url, running)["progress"]) is None or progress["segments_done"] < 2:
        assert time.monotonic() < deadline, progress  # its status shows the segments done, of how many
        time.sleep(0.1)
    assert progress["segments"] > progress["segments_done"]
    canceled = httpx.put(server.url + "/transcribe_job/cancel", params={"task_id": running}).json()
    assert canceled["status"] == "canceled"
    # within 5 s the runner has seen it (it looks every second) and cancelled the recognition: its queued
    # segments left the batch queue, and nothing runs any more
    time.sleep(5)
    at_rest = segment_counts(server.url).get("run", 0.0)
    time.sleep(3)
    assert segment_counts(server.url).get("run", 0.0) == at_rest
    for job_id in (running, *queued):
        assert status(server.url, job_id)["status"] == "canceled"
        got = httpx.get(server.url + "/transcribe_job/get", params={"task_id": job_id})
        assert got.status_code == 409 and got.json()["error"] == "job_not_finished"


def test_kill_9_and_restart_lose_no_job(slow: tuple[Server, dict[str, str], Path], tmp_path: Path) -> None:
    """kill -9 of every server process while two jobs run (one per entry process) and one waits; a new server on
    the same folder runs the waiting one and the interrupted ones again (once their leases run out), and knows
    every id meanwhile."""
    server, env, _ = slow
    minute = long_file(60)
    jobs = [submit(server.url, minute) for _ in range(3)]
    deadline = time.monotonic() + 60
    while (states := [status(server.url, j)["state"] for j in jobs]).count("running") < 2:
        assert time.monotonic() < deadline, states
        time.sleep(0.1)
    for process in server.processes():
        process.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=30)  # type: ignore[union-attr]
    with Server(env, tmp_path / "restarted.log") as again:
        # known at once (the runners start before the server is ready: a job may be done already)
        assert {status(again.url, j)["state"] for j in jobs} <= {"queued", "running", "completed"}
        done = [wait_state(again.url, j, {"completed", "failed"}, timeout=240) for j in jobs]
        assert [d["status"] for d in done] == ["completed"] * 3
        assert [d["attempts"] for d in done] == [2 if s == "running" else 1 for s in states]
        answer = httpx.get(again.url + "/transcribe_job/get", params={"task_id": jobs[0]}).json()
        assert answer["duration_s"] == pytest.approx(60, abs=0.01)


def test_a_job_is_seen_only_by_the_key_that_submitted_it(tiny_bpe: Exported, tmp_path: Path) -> None:
    env = {
        "ASR_MODEL": tiny_bpe.tag,
        "ASR_DEVICE": "cpu",
        "ASR_JOBS_DIR": str(tmp_path / "jobs"),
        "ASR_API_KEYS": "key-one,key-two",
    }
    with Server(env, tmp_path / "keys.log") as s:
        one, two = {"authorization": "Bearer key-one"}, {"authorization": "Bearer key-two"}
        r = httpx.post(s.url + "/transcribe_job/submit", files={"audio": ("a.wav", long_file(3))}, headers=one)
        job_id = r.json()["task_id"]
        assert httpx.get(s.url + "/transcribe_job/status", params={"task_id": job_id}, headers=one).status_code == 200
        assert httpx.get(s.url + "/transcribe_job/status", params={"task_id": job_id}, headers=two).status_code == 404
        assert httpx.put(s.url + "/transcribe_job/cancel", params={"task_id": job_id}, headers=two).status_code == 404
        assert httpx.get(s.url + "/transcribe_job/status", params={"task_id": job_id}).status_code == 401


def test_the_readme_examples_run_as_written(server: Server, tmp_path: Path) -> None:
    (tmp_path / "speech.wav").write_bytes(encode(speech.hindi(speech.SENTENCES[2]), RATE))
    code = example("jobs").replace("http://127.0.0.1:3000", server.url)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{32} in_progress", lines[0]) and lines[1] == "1"  # the SRT's first cue
    curl = example("jobs curl").replace("http://127.0.0.1:3000", server.url)
    out = subprocess.run(["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)
    assert '"task_id"' in out.stdout and '"status"' in out.stdout


def test_an_unusable_jobs_folder_turns_jobs_off_and_the_rest_serves(tiny_bpe: Exported, tmp_path: Path) -> None:
    """ASR_JOBS_DIR that cannot be created (here under a file; in a pod, a read-only root file system): the
    service starts and transcribes, the job routes answer 503 with the reason, and the log says it once."""
    (tmp_path / "a-file").write_text("not a folder")
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "ASR_JOBS_DIR": str(tmp_path / "a-file" / "jobs")}
    with Server(env, tmp_path / "off.log") as s:
        clip = encode(speech.hindi(speech.SENTENCES[0]), RATE)
        assert httpx.post(s.url + "/transcribe", files={"audio": ("a.wav", clip)}, timeout=60).status_code == 200
        off = httpx.post(s.url + "/transcribe_job/submit", files={"audio": ("a.wav", clip)}, timeout=60)
        status = httpx.get(s.url + "/transcribe_job/status", params={"task_id": "f" * 32})
        for r in (off, status):
            assert r.status_code == 503 and r.json()["error"] == "unavailable" and "ASR_JOBS_DIR" in r.json()["message"]
        assert "jobs are off" in s.logs()


def test_jobs_have_their_own_limits(tiny_bpe: Exported, tmp_path: Path) -> None:
    """ASR_JOB_MAX_UPLOAD_MB and ASR_JOB_MAX_DURATION_S apart from the interactive limits: a 10-s file over
    /transcribe's limits is a job's to take; a job over the jobs' own limit fails with /transcribe's error."""
    env = {
        "ASR_MODEL": tiny_bpe.tag,
        "ASR_DEVICE": "cpu",
        "ASR_MAX_UPLOAD_MB": "0.2",
        "ASR_MAX_DURATION_S": "5",
        "ASR_JOB_MAX_UPLOAD_MB": "2",
        "ASR_JOB_MAX_DURATION_S": "20",
    }
    ten, thirty = long_file(10), long_file(30)  # 0.32 and 0.96 MB
    with Server(env, tmp_path / "limits.log") as s:
        direct = httpx.post(s.url + "/transcribe", files={"audio": ("a.wav", ten)}, timeout=60)
        assert direct.status_code == 413 and direct.json()["error"] == "upload_too_large"
        taken, too_long = submit(s.url, ten), submit(s.url, thirty)
        assert wait_state(s.url, taken, {"completed", "failed"})["status"] == "completed"
        assert wait_state(s.url, too_long, {"completed", "failed"})["status"] == "failed"
        failed = httpx.get(s.url + "/transcribe_job/get", params={"task_id": too_long})
        assert failed.status_code == 413 and failed.json()["error"] == "audio_too_long"
        big = httpx.post(s.url + "/transcribe_job/submit", files={"audio": ("a.wav", long_file(70))}, timeout=60)
        assert big.status_code == 413 and big.json()["error"] == "upload_too_large" and "2 MB" in big.json()["message"]
