"""The README's examples run verbatim (only the port differs) against a real server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import speech
from tests.audio_files import encode
from tests.conftest import Exported
from tests.server import Server

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")]


def example(name: str) -> str:
    """The code block marked `<!-- example: name -->`, in the README or a page of docs/."""
    pages = [README, *((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page if isinstance(page, str) else page.read_text(encoding="utf-8")
        match = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)```", text, re.S)
        if match:
            return match.group(1)
    raise AssertionError(f"neither the README nor docs/ has the example {name!r}")


@pytest.fixture(scope="module")
def server_and_dir(tiny_bpe: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    work = tmp_path_factory.mktemp("readme")
    (work / "speech.wav").write_bytes(encode(speech.hindi(speech.SENTENCES[2]), 16000))
    with Server({"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu"}, work / "server.log") as server:
        yield server, work


def test_curl_example(server_and_dir: tuple[Server, Path]) -> None:
    server, work = server_and_dir
    command = example("curl").replace("http://127.0.0.1:3000", server.url)
    out = subprocess.run(["bash", "-c", command], cwd=work, capture_output=True, text=True, timeout=120, check=True)
    body = json.loads(out.stdout)
    assert body["text"] and body["words"] and body["language"] == "hi"


def test_client_example(server_and_dir: tuple[Server, Path]) -> None:
    server, work = server_and_dir
    code = example("client").replace("http://127.0.0.1:3000", server.url)
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) >= 2 and re.match(r"\s*\d+\.\d\d\s+\d+\.\d\d\s+\d\.\d\d \S", lines[1])


def test_openai_example(server_and_dir: tuple[Server, Path]) -> None:
    server, work = server_and_dir
    code = example("openai").replace("http://127.0.0.1:3000", server.url)
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import httpx

    with open(work / "speech.wav", "rb") as audio:
        want = httpx.post(server.url + "/transcribe", files={"audio": audio}, timeout=60).json()["text"]
    assert out.stdout.removesuffix("\n") == want


def test_realtime_example(server_and_dir: tuple[Server, Path]) -> None:
    """The realtime block streams speech.wav in 100-ms pieces, commits, prints the deltas and the transcript:
    the deltas add up to it."""
    server, work = server_and_dir
    code = example("realtime").replace("http://127.0.0.1:3000", server.url)
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    deltas, transcript = [line.removeprefix("... ") for line in lines[:-1]], lines[-1]
    assert transcript.strip() and deltas and "".join(deltas) == transcript


def test_quick_start_is_the_two_commands_ci_and_these_tests_run() -> None:
    """The quick start block holds exactly two commands: the serve command, which the tests below start (offline
    and with a stored model), and the test command, which .ci/run executes (so CI runs what the README says)."""
    block = README.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["bash scripts/serve.sh", "bash scripts/test.sh"]
    run = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert run[-1] == "exec " + commands[1] and 'cd "$(dirname "$0")/.."' in run
    import inspect

    served = inspect.getsource(test_serve_command_serves_a_stored_model) + inspect.getsource(
        test_serve_command_offline_serves_the_demo_model
    )
    assert served.count('script="' + commands[0].split()[1] + '"') == 2


def test_serve_command_offline_serves_the_demo_model(tmp_path: Path) -> None:
    """Offline, with no model asked for: the download fails, the demo model is exported (verified) and served
    under its own name, the line the README quotes is printed, and /status and /v1/models mark it a demo."""
    import httpx

    from demo.metrics import cer
    from demo.speech import speak
    from demo.text import read_heldout

    quoted = re.search(r"```text\n(serve: the pretrained model .*?)\n```", README, re.S)
    assert quoted, "the README quotes the offline line"
    env = {"BENTOML_HOME": str(tmp_path / "empty-store"), "ASR_DEVICE": "cpu"}
    for key in ("ASR_MODEL", "ASR_MODELS"):
        env[key] = ""
    with Server(env, tmp_path / "offline.log", script="scripts/serve.sh") as server:
        assert quoted.group(1) in server.logs()
        status = httpx.post(server.url + "/status", json={}, timeout=10).json()
        listed = httpx.get(server.url + "/v1/models", timeout=10).json()["data"]
        sentence = read_heldout()[48]  # past the demo model's dev set
        text = httpx.post(
            server.url + "/transcribe", files={"audio": ("a.wav", encode(speak(sentence), 16000))}, timeout=60
        ).json()["text"]
    assert status["model"].startswith("stt_hi_demo_conformer_ctc:") and status["models"][0]["demo"] is True
    assert listed[0]["id"] == "stt_hi_demo_conformer_ctc" and listed[0]["demo"] is True
    assert "not a model of human speech" in listed[0]["notice"]
    assert cer([sentence], [text]) < 0.2


def test_serve_command_offline_never_replaces_a_model_asked_for(tmp_path: Path) -> None:
    env = {
        "BENTOML_HOME": str(tmp_path / "empty-store"),
        "BENTOML_DO_NOT_TRACK": "True",
        "PATH": "/usr/bin:/bin",
        "ASR_MODEL": "stt_hi_conformer_ctc_medium:latest",
    }
    out = subprocess.run(["bash", "scripts/serve.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 1
    assert "--nemo PATH.nemo" in out.stderr and "--config medium" in out.stderr and "Traceback" not in out.stderr
    assert "DEMO" not in out.stderr and not (tmp_path / "empty-store" / "models" / "stt_hi_demo_conformer_ctc").exists()


def test_serve_command_serves_a_stored_model(tiny_bpe: Exported, tmp_path: Path) -> None:
    env = {"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu"}
    with Server(env, tmp_path / "serve.log", script="scripts/serve.sh") as server:
        import httpx

        wav = encode(speech.hindi(speech.SENTENCES[0]), 16000)
        r = httpx.post(server.url + "/transcribe", files={"audio": ("a.wav", wav, "audio/wav")}, timeout=60)
        assert r.status_code == 200 and r.json()["model"] == tiny_bpe.tag


def test_error_table_lists_every_code() -> None:
    """Every error code the service can send (its error classes, the codes given to BentoML's own statuses)
    is in the README's error table, on the row of its status."""
    import inspect

    from service import catalog, errors

    table = README[README.index("### Errors") :]
    table = table[: table.index("\n## ")]
    rows = [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^\| (\d{3}) \| (.*)$", table, re.M)]
    sent: set[tuple[int, str]] = {(status, code) for status, code in errors.STATUS_CODES.items()}
    for module in (errors, catalog):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, errors.ASRError) and cls is not errors.ASRError:
                sent.add((int(cls.status), cls.code))
    sent -= {(404, "not_found"), (405, "method_not_allowed"), (422, "unprocessable"), (500, "internal_error")}
    missing = sorted(f"{s} {c}" for s, c in sent if f"`{c}`" not in " ".join(v for k, v in rows if k == s))
    assert missing == [], f"codes missing from the README's error table: {missing}"


def test_several_models_example_runs_offline_as_written(tmp_path: Path) -> None:
    """The README's several-models block, command by command: the exports into an empty store, the serve line
    (its ASR_MODELS) through scripts/serve.sh, and the curl line against it."""
    import shlex

    import httpx

    block = example("several models")
    lines = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    exports = [line for line in lines if "-m export" in line]
    (serve_line,) = [line for line in lines if "scripts/serve.sh" in line]
    (curl_line,) = [line for line in lines if line.startswith("curl")]
    home = tmp_path / "store"
    env = {**__import__("os").environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    for line in exports:
        run = subprocess.run(shlex.split(line), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
    assignment = serve_line.split()[0]
    assert assignment.startswith("ASR_MODELS=")
    (tmp_path / "speech.wav").write_bytes(encode(speech.hindi(speech.SENTENCES[1]), 16000))
    server_env = {"BENTOML_HOME": str(home), "ASR_MODELS": assignment.split("=", 1)[1], "ASR_DEVICE": "cpu"}
    with Server(server_env, tmp_path / "several.log", script="scripts/serve.sh") as server:
        command = curl_line.replace("http://127.0.0.1:3000", server.url)
        out = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        models = httpx.get(server.url + "/v1/models", timeout=10).json()["data"]
    body = json.loads(out.stdout)
    assert body["language"] == "mr" and body["model"].startswith("tiny_conformer_ctc_char:")
    assert [(m["id"], m["language"]) for m in models] == [
        ("stt_hi_demo_conformer_ctc", "hi"),
        ("tiny_conformer_ctc_char", "mr"),
    ]


def test_architecture_page_names_files_that_exist_and_every_module() -> None:
    """docs/architecture.md's folder listing names existing files only, and every module of service/, export/
    and asr_transcribe/."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = page.split("## The folders", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    named, folder = set(), ""
    for line in block.splitlines():
        head = re.split(r"\s{2,}", line.strip())[0]
        if not line.startswith(" "):
            folder = head
            continue
        named |= {folder + name.strip() for name in head.split(",")}
    assert named and not [p for p in named if not (ROOT / p).exists()]
    modules = {
        p.relative_to(ROOT).as_posix()
        for top in ("service", "export", "asr_transcribe")
        for p in (ROOT / top).rglob("*.py")
        if p.name != "__init__.py"
    }
    assert not modules - named, modules - named


def test_every_code_block_of_the_readme_is_an_example_a_test_runs() -> None:
    """Each fenced code block but the quick start, the quoted line and the deployment commands is marked as an
    example, and each marked example is run by a test (this module, test_beam, test_clients, test_realtime,
    test_keys, test_cli, test_jobs, test_demo_model)."""
    blocks = re.findall(r"(<!-- example: ([\w ]+) -->\n)?```(\w+)\n", README)
    unmarked = [lang for marker, _, lang in blocks if not marker]
    assert unmarked == ["bash", "text", "bash"], unmarked  # quick start, the offline line, deployment
    runners = " ".join(
        (ROOT / "tests" / f).read_text(encoding="utf-8")
        for f in (
            "test_readme.py",
            "test_beam.py",
            "test_clients.py",
            "test_realtime.py",
            "test_keys.py",
            "test_cli.py",
            "test_jobs.py",
            "test_demo_model.py",
        )
    )
    for _, name, _ in blocks:
        if name:
            assert f'example("{name}")' in runners or f"example: {name} -->" in runners, name
