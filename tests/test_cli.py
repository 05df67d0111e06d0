"""asr-transcribe (asr_transcribe/) through a real `bentoml serve`: a folder of recordings in four formats, one
broken, gives a transcript per good file equal to /transcribe's answer and reports the broken one (exit 1); a
rerun sends nothing for the finished files; a changed file is sent again, a touched one is not; Ctrl-C keeps
what finished; an unreachable service is exit 2."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from asr_transcribe.inputs import EXTENSIONS, find
from tests import speech
from tests.audio_files import ENCODINGS, encode
from tests.conftest import Exported
from tests.server import ROOT, Server
from tests.test_readme import example

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")]
RATE = 16000
# four formats, three files each
KINDS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("mp3", "MP3", "MPEG_LAYER_III"), ("m4a", "MP4", "AAC")]


@pytest.fixture(scope="module")
def server(tiny_bpe: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu"}
    with Server(env, tmp_path_factory.mktemp("cli") / "server.log") as s:
        yield s


def folder(root: Path) -> tuple[Path, Path]:
    """12 recordings in 4 formats under nested folders, one of them broken; a note and a hidden file beside them
    (not audio by name: not sent). Returns the folder and the broken file."""
    base = root / "archive"
    for i, (ext, container, subtype) in enumerate(KINDS * 3):
        audio = speech.hindi(speech.SENTENCES[i % len(speech.SENTENCES)])
        path = base / f"day{i % 2}" / f"take{i:02d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(audio, RATE, container, subtype))
    broken = base / "day0" / "take00.wav"
    broken.write_bytes(broken.read_bytes()[:30])  # a WAV header cut short
    (base / "notes.txt").write_text("not audio")
    (base / ".hidden.wav").write_bytes(b"")
    return base, broken


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "asr_transcribe", *args, "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def requests_sent(url: str, route: str = "/transcribe") -> float:
    """The service's count of requests to `route` (asr_requests_total, summed over its labels)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    pattern = rf'^asr_requests_total\{{[^}}]*route="{re.escape(route)}"[^}}]*\}} (\S+)'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def direct(url: str, path: Path, fmt: str) -> str:
    r = httpx.post(
        url + "/transcribe", files={"audio": (path.name, path.read_bytes())}, data={"response_format": fmt}, timeout=120
    )
    assert r.status_code == 200, r.text
    return r.text


def test_a_folder_gives_the_services_answers_and_reports_the_broken_file(server: Server, tmp_path: Path) -> None:
    base, broken = folder(tmp_path)
    out = tmp_path / "out"
    run = cli(str(base), "--url", server.url, "--format", "srt", "--out", str(out), "--concurrency", "4")
    assert run.returncode == 1, run.stderr
    written = sorted(p.relative_to(out) for p in out.rglob("*.srt"))
    sources = sorted(p for p in base.rglob("*") if p.suffix in {".wav", ".flac", ".mp3", ".m4a"} and p.name[0] != ".")
    assert len(sources) == 12 and len(written) == 11
    for source in sources:
        transcript = out / "archive" / source.relative_to(base).with_suffix(".srt")
        if source == broken:
            assert not transcript.exists()
            continue
        assert transcript.read_text("utf-8") == direct(server.url, source, "srt"), source
    # the summary: counts, and the failure with the service's status and code
    assert "12 files: 11 transcribed, 0 already done, 1 failed" in run.stderr
    assert re.search(rf"failed: {re.escape(str(broken))}: 4\d\d \w+: \S", run.stderr), run.stderr
    assert not list(out.rglob("*.part"))  # written atomically: no leftovers

    # a rerun sends only the file that failed
    before = requests_sent(server.url)
    again = cli(str(base), "--url", server.url, "--format", "srt", "--out", str(out))
    assert again.returncode == 1 and "12 files: 0 transcribed, 11 already done, 1 failed" in again.stderr
    assert requests_sent(server.url) - before == 1

    # a changed file is sent again; a touched but identical one is not (its hash); other options are new work
    changed, touched = sources[1], sources[2]
    changed.write_bytes(
        encode(speech.hindi(speech.SENTENCES[-1]), RATE, *{k[0]: k[1:] for k in KINDS}[changed.suffix[1:]])
    )
    os.utime(touched, ns=(time.time_ns(), time.time_ns()))
    before = requests_sent(server.url)
    third = cli(str(base), "--url", server.url, "--format", "srt", "--out", str(out))
    assert "12 files: 1 transcribed, 10 already done, 1 failed" in third.stderr, third.stderr
    assert requests_sent(server.url) - before == 2  # the changed file and the broken one
    changed_out = out / "archive" / changed.relative_to(base).with_suffix(".srt")
    assert changed_out.read_text("utf-8") == direct(server.url, changed, "srt")


def test_the_readme_example_runs_as_written(server: Server, tmp_path: Path) -> None:
    """The README's command, as written but for the port, with the installed console script."""
    (tmp_path / "recordings" / "2026").mkdir(parents=True)
    (tmp_path / "recordings" / "2026" / "a.wav").write_bytes(encode(speech.hindi(speech.SENTENCES[3]), RATE))
    command = example("folder").replace("http://127.0.0.1:3000", server.url)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    srt = tmp_path / "transcripts" / "recordings" / "2026" / "a.srt"
    assert srt.read_text("utf-8") == direct(server.url, tmp_path / "recordings" / "2026" / "a.wav", "srt")


def test_jobs_give_the_same_transcripts_and_a_rerun_waits_for_the_same_jobs(server: Server, tmp_path: Path) -> None:
    """--jobs: each file submitted as a job and waited for; the transcripts equal /transcribe's. Interrupted
    after the first file, the rerun waits for the jobs already submitted: no file is submitted twice."""
    base = tmp_path / "long"
    base.mkdir()
    clip = encode(np.concatenate([speech.hindi(t) for t in speech.SENTENCES * 4]), RATE)
    for i in range(6):
        (base / f"f{i}.wav").write_bytes(clip)
    out = tmp_path / "out"
    before = requests_sent(server.url, "/transcribe_job/submit")
    command = [sys.executable, "-m", "asr_transcribe", str(base), "--url", server.url, "--out", str(out), "--jobs"]
    proc = subprocess.Popen(
        [*command, "--format", "vtt", "--concurrency", "2"], stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    deadline = time.monotonic() + 120
    while not list(out.rglob("*.vtt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rerun = cli(str(base), "--url", server.url, "--out", str(out), "--jobs", "--format", "vtt")
    assert rerun.returncode == 0 and "6 files:" in rerun.stderr, rerun.stderr
    assert requests_sent(server.url, "/transcribe_job/submit") - before == 6  # each file once, across both runs
    for i in range(6):
        assert (out / "long" / f"f{i}.vtt").read_text("utf-8") == direct(server.url, base / f"f{i}.wav", "vtt")


def test_json_with_word_times_equals_the_service(server: Server, tmp_path: Path) -> None:
    audio = tmp_path / "one.flac"
    audio.write_bytes(encode(speech.hindi(speech.SENTENCES[0]), RATE, "FLAC", "PCM_16"))
    run = cli(str(audio), "--url", server.url, "--format", "json", "--timestamps", "--out", str(tmp_path / "o"))
    assert run.returncode == 0, run.stderr
    r = httpx.post(
        server.url + "/transcribe",
        files={"audio": ("one.flac", audio.read_bytes())},
        data={"timestamps": "true"},
        timeout=60,
    )
    got = json.loads((tmp_path / "o" / "one.json").read_text("utf-8"))
    assert got == r.json() and got["words"]
    assert re.search(
        r"1 files: 1 transcribed, 0 already done, 0 failed\n\d+\.\d\d h of audio in [\d.]+ s \(RTFx", run.stderr
    )


def test_ctrl_c_keeps_what_finished_and_a_rerun_goes_on(server: Server, tmp_path: Path) -> None:
    base = tmp_path / "many"
    base.mkdir()
    clip = encode(np.concatenate([speech.hindi(t) for t in speech.SENTENCES]), RATE)
    for i in range(40):
        (base / f"f{i:02d}.wav").write_bytes(clip)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "asr_transcribe",
        str(base),
        "--url",
        server.url,
        "--out",
        str(out),
        "--concurrency",
        "1",
    ]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not list(out.rglob("*.txt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "(interrupted)" in stderr, stderr
    finished = {p.name for p in out.rglob("*.txt")}
    assert 1 <= len(finished) < 40
    ledger = json.loads((out / "asr-transcribe.json").read_text("utf-8"))
    assert {Path(e["output"]).name for e in ledger["files"].values()} == finished  # every finished file recorded
    rerun = cli(str(base), "--url", server.url, "--out", str(out), "--concurrency", "4")
    assert (
        rerun.returncode == 0
        and f"40 files: {40 - len(finished)} transcribed, {len(finished)} already done" in rerun.stderr
    )


def test_unreachable_service_and_bad_paths_are_exit_2(tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(encode(np.zeros(RATE, np.float32), RATE))
    run = cli(str(audio), "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "o"), "--wait-ready", "2", timeout=120)
    assert run.returncode == 2 and "http://127.0.0.1:9" in run.stderr, run.stderr
    missing = cli(str(tmp_path / "nothing"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_inputs_by_name_and_no_two_onto_one_output(tmp_path: Path) -> None:
    """Folders are searched by the extensions of what the service decodes (every container the suite encodes);
    two inputs that would write one transcript are refused before anything is sent."""
    usual = {
        "WAV": ".wav",
        "FLAC": ".flac",
        "OGG": ".ogg",
        "MP3": ".mp3",
        "MP4": ".m4a",
        "WEBM": ".webm",
        "AAC": ".aac",
    }
    assert {usual[container] for _, container, _ in ENCODINGS} <= EXTENSIONS
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "a.mp3").write_bytes(b"x")
    with pytest.raises(Exception, match="would both be written to"):
        find([tmp_path], "txt")


def test_every_option_reaches_the_service_as_the_api_takes_it(tiny_bpe: Exported, tmp_path: Path) -> None:
    """--model, --language, --decoding, --hotwords, --itn, --itn-digits, --timestamps and --token (a keyed
    service): the transcript is
    /transcribe's answer to the same fields; without the key, or with a wrong one, nothing is sent: exit 2 with
    the service's 401."""
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu", "ASR_API_KEYS": "cli-key"}
    audio = tmp_path / "one.wav"
    audio.write_bytes(encode(speech.hindi(speech.SENTENCES[1]), RATE))
    name = tiny_bpe.tag.split(":")[0]
    with Server(env, tmp_path / "keys.log") as s:
        options = ["--model", name, "--language", "hi", "--decoding", "beam", "--hotwords", "नमस्ते:5, भारत"]
        options += ["--itn", "--itn-digits", "latin"]
        run = cli(str(audio), "--url", s.url, "--format", "json", "--timestamps", "--token", "cli-key", "--out",
                  str(tmp_path / "o"), *options)  # fmt: skip
        assert run.returncode == 0, run.stderr
        fields = {"model": name, "language": "hi", "decoding": "beam", "hotwords": "नमस्ते:5, भारत", "timestamps": "true"}
        fields |= {"itn": "true", "itn_digits": "latin"}
        r = httpx.post(
            s.url + "/transcribe",
            files={"audio": ("one.wav", audio.read_bytes())},
            data=fields,
            headers={"authorization": "Bearer cli-key"},
            timeout=120,
        )
        assert r.status_code == 200 and json.loads((tmp_path / "o" / "one.json").read_text("utf-8")) == r.json()
        assert "text_spoken" in r.json()  # the written form was asked for
        for key in ([], ["--token", "wrong"]):
            refused = cli(str(audio), "--url", s.url, "--out", str(tmp_path / "p"), *key)
            assert refused.returncode == 2 and "401 unauthorized: " in refused.stderr and "--token" in refused.stderr
        assert not (tmp_path / "p").exists() or not list((tmp_path / "p").rglob("*.txt"))
