"""The bento (built offline, lean) and the OCI image (really built and run here with podman or docker)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests import speech
from tests.audio_files import encode, ffmpeg_encode
from tests.conftest import Exported
from tests.server import ROOT, Server, free_port

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")]
BENTOML = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "bentoml")
FORBIDDEN = ("torch", "nemo", "nemo_toolkit", "lightning", "transformers", "nemo_text_processing", "pynini")


def build(*args: str, offline: bool = True) -> list[str]:
    env = {**os.environ, "BENTOML": str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "bentoml")}
    if offline:  # no index, no proxy: the bento build must not need the network
        env.update(
            PIP_INDEX_URL="http://127.0.0.1:9/simple",
            UV_INDEX_URL="http://127.0.0.1:9/simple",
            HTTPS_PROXY="http://127.0.0.1:9",
            HTTP_PROXY="http://127.0.0.1:9",
        )
    out = subprocess.run(
        ["bash", "scripts/build.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout.strip().splitlines()


@pytest.fixture(scope="module")
def lm_model(tiny_char: Exported, tmp_path_factory: pytest.TempPathFactory) -> str:
    """tiny_char with an n-gram LM packed the way the export packs one (`--lm`), as its own store entry."""
    from export.lm import build_arpa
    from export.pipeline import DecoderOptions, pack_decoder
    from export.store import register

    work = tmp_path_factory.mktemp("lm-model")
    for file in tiny_char.directory.iterdir():  # the graphs (main and streaming) and the manifest
        if file.is_file():
            shutil.copy2(file, work / file.name)
    arpa = work / "text.arpa"
    arpa.write_text(build_arpa([s.split() for s in speech.SENTENCES], 3), encoding="utf-8")
    m = tiny_char.manifest
    spec = pack_decoder(DecoderOptions(arpa, 0.5, 1.0, 8), (list(m.vocabulary), m.blank_id, m.tokenizer), work)
    return register("tiny_char_lm", work, m.model_copy(update={"decoder": spec}))


@pytest.fixture(scope="module")
def models(tiny_bpe: Exported, tiny_char: Exported, lm_model: str) -> str:
    """Three models (the first the default; the third has an n-gram LM), as ASR_MODELS gives them to
    scripts/build.sh."""
    return f"{tiny_bpe.tag},{tiny_char.tag},{lm_model}"


@pytest.fixture(scope="module")
def bento(models: str) -> str:
    os.environ["ASR_MODELS"] = models
    try:
        return build("--bento-only")[-1]
    finally:
        del os.environ["ASR_MODELS"]


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    return encode(speech.hindi(speech.SENTENCES[4]), 16000)


@pytest.fixture(scope="module")
def dev_text(tiny_bpe: Exported, speech_wav: bytes, tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the development server (`bentoml serve` from the repository) answers."""
    log = tmp_path_factory.mktemp("dev") / "dev.log"
    with Server({"ASR_MODEL": tiny_bpe.tag, "ASR_DEVICE": "cpu"}, log) as server:
        return str(transcribe(server.url, speech_wav)["text"])


@pytest.fixture(scope="module")
def dev_beam(lm_model: str, speech_wav: bytes, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The development server's beam search answers for the LM model: with its LM, and with hotwords too."""
    log = tmp_path_factory.mktemp("dev-beam") / "dev.log"
    with Server({"ASR_MODEL": lm_model, "ASR_DEVICE": "cpu"}, log) as server:
        with_lm = str(transcribe(server.url, speech_wav, decoding="beam")["text"])
        hot = str(transcribe(server.url, speech_wav, hotwords="समझ:50")["text"])
    return with_lm, hot


def transcribe(url: str, wav: bytes, **fields: str) -> dict[str, object]:
    r = httpx.post(url + "/transcribe", files={"audio": ("s.wav", wav, "audio/wav")}, data=fields, timeout=120)
    assert r.status_code == 200, r.text
    return dict(r.json())


def bentoml_model_path(tag: str) -> str:
    import bentoml

    return str(bentoml.models.get(tag).path)


def bento_path(tag: str) -> Path:
    out = subprocess.run([BENTOML, "get", tag, "-o", "path"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def test_tensorrt_bento_adds_only_tensorrt(bento: str, tiny_bpe: Exported) -> None:
    """ASR_IMAGE_TENSORRT=1: the same bento plus NVIDIA's TensorRT wheel, the version ORT's provider links."""
    from service.recognition.device import TENSORRT_PACKAGE

    os.environ.update(ASR_IMAGE_TENSORRT="1", ASR_MODEL=tiny_bpe.tag)
    try:
        tag = build("--bento-only")[-1]
    finally:
        del os.environ["ASR_IMAGE_TENSORRT"], os.environ["ASR_MODEL"]
    plain, with_trt = (bento_path(t) / "env" / "python" / "requirements.txt" for t in (bento, tag))
    added = set(with_trt.read_text().split()) - set(plain.read_text().split())
    assert added == {TENSORRT_PACKAGE} and TENSORRT_PACKAGE.startswith("tensorrt-cu13-libs==10.")


def test_bento_is_lean_and_references_the_models(bento: str, models: str) -> None:
    path = bento_path(bento)
    requirements = (path / "env" / "python" / "requirements.txt").read_text().lower()
    names = {line.split("==")[0].split("[")[0].strip() for line in requirements.splitlines() if line.strip()}
    assert not names & set(FORBIDDEN), names
    assert "onnxruntime-gpu" in names and all("==" in line for line in requirements.splitlines() if line.strip())
    assert "kaldifst" in names  # applies the written form's grammars, which travel in the models' store entries
    assert (Path(bentoml_model_path(models.split(",")[0])) / "itn_tagger.fst").is_file()
    # KenLM (n-gram LMs) as the wheel setup.sh built; beam search itself is the service's own code
    assert [w.name for w in (path / "env" / "python" / "wheels").iterdir()] == [
        "kenlm-0.3.0-cp311-cp311-linux_x86_64.whl"
    ]
    files = {p.relative_to(path / "src").as_posix() for p in (path / "src").rglob("*") if p.is_file()}
    assert "service/service.py" in files and not any(f.startswith(("tests/", "export/")) for f in files)
    # the VAD's graph and Silero's licence travel with it (its source graph, in export/, does not)
    assert {"service/audio/silero_vad/silero_vad_batched.onnx", "service/audio/silero_vad/LICENSE"} <= files
    assert "service/recognition/greedy_head/greedy_head.onnx" in files  # greedy decoding on a GPU
    spec = yaml.safe_load((path / "bento.yaml").read_text())
    tags = {m["tag"] for s in spec["services"] for m in s.get("models", [])}
    assert tags == set(models.split(",")) and spec["args"]["models"] == models
    # the n-gram LM travels in its model's store entry
    assert (Path(bentoml_model_path(models.split(",")[2])) / "lm.arpa").is_file()
    document = yaml.safe_load((path / "apis" / "openapi.yaml").read_text())  # ours (service/api/openapi.py)
    assert {"/transcribe", "/v1/audio/transcriptions", "/v1/models/{model_id}"} <= set(document["paths"])


def test_bento_serves_what_the_dev_server_serves(
    bento: str, models: str, speech_wav: bytes, dev_text: str, tmp_path: Path
) -> None:
    env = {"ASR_DEVICE": "cpu"}
    os.environ.pop("ASR_MODEL", None)
    with Server(env, tmp_path / "bento.log", target=bento) as server:
        body = transcribe(server.url, speech_wav)
        second = transcribe(server.url, speech_wav, language="mr")
    assert body["text"] == dev_text and body["model"] == models.split(",")[0]
    assert second["model"] == models.split(",")[1]


def engine() -> str | None:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    return "podman" if shutil.which("podman") else None


@pytest.fixture(scope="module")
def image(models: str) -> Iterator[tuple[str, str]]:
    tool = engine()
    if tool is None:
        pytest.skip("neither podman nor docker is installed: the container cannot be built here")
    name = f"localhost/nemo-ctc-asr-test:{int(time.time())}"
    os.environ["ASR_MODELS"] = models
    try:
        lines = build(name, offline=False)  # the image build installs the runtime wheels from the index
    finally:
        del os.environ["ASR_MODELS"]
    yield tool, lines[-1]
    subprocess.run([tool, "rmi", "-f", lines[-1]], capture_output=True)


class Container:
    def __init__(self, tool: str, image: str, env: dict[str, str]) -> None:
        self.tool, self.port = tool, free_port()
        args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        out = subprocess.run(
            [tool, "run", "-d", "-p", f"127.0.0.1:{self.port}:3000", *args, image, "serve"],
            capture_output=True,
            text=True,
            check=True,
        )
        self.id = out.stdout.strip().splitlines()[-1]
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, path: str = "/readyz", seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        logs = subprocess.run([self.tool, "logs", self.id], capture_output=True, text=True).stdout
        raise TimeoutError(f"container not answering {path}:\n{logs[-3000:]}")

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.tool, "exec", self.id, *command], capture_output=True, text=True)

    def remove(self) -> None:
        subprocess.run([self.tool, "rm", "-f", "-t", "5", self.id], capture_output=True)


def test_container_answers_like_the_dev_server(
    image: tuple[str, str],
    models: str,
    speech_wav: bytes,
    dev_text: str,
    dev_beam: tuple[str, str],
    tiny_bpe: Exported,
) -> None:
    tool, name = image
    c = Container(tool, name, {"ASR_DEVICE": "auto"})
    try:
        c.wait()
        body = transcribe(c.url, speech_wav)
        assert body["text"] == dev_text and body["model"] == models.split(",")[0]
        assert transcribe(c.url, speech_wav, model=models.split(",")[1].split(":")[0])["model"] == models.split(",")[1]
        # what phones record, decoded by the image's FFmpeg libraries (PyAV)
        m4a = ffmpeg_encode(speech.hindi(speech.SENTENCES[0]), 16000, "MP4")
        r = httpx.post(c.url + "/transcribe", files={"audio": ("voice.m4a", m4a)}, timeout=120)
        assert r.status_code == 200 and r.json()["duration_s"] > 1, r.text
        assert c.exec("id", "-u").stdout.strip() != "0"  # non-root
        listed = c.exec("python", "-m", "pip", "list", "--format=freeze").stdout.lower()
        listed += c.exec("uv", "pip", "list").stdout.lower()
        assert not any(f"{p}==" in listed or f"\n{p} " in listed for p in FORBIDDEN)
        assert c.exec("python", "-c", "import torch").returncode != 0
        # the written form: the model's grammars (in its store entry) applied by the image's kaldifst, as here
        from service.recognition.written import Grammars, Writing

        assert tiny_bpe.manifest.itn is not None
        written = transcribe(c.url, speech_wav, itn="true", itn_digits="latin")
        want = Writing(Grammars.load(tiny_bpe.directory, tiny_bpe.manifest.itn), "latin").text(dev_text)
        assert written["text_spoken"] == dev_text and written["text"] == want
        assert c.exec("python", "-c", "import kaldifst").returncode == 0
        assert httpx.post(c.url + "/status", timeout=10).json()["providers"] == ["CPUExecutionProvider"]
        # beam search with the packed n-gram LM (KenLM built in the image), and hotwords, as the dev server
        lm_name = models.split(",")[2].split(":")[0]
        assert transcribe(c.url, speech_wav, model=lm_name, decoding="beam")["text"] == dev_beam[0]
        assert transcribe(c.url, speech_wav, model=lm_name, hotwords="समझ:50")["text"] == dev_beam[1]
        # a streaming session over the image's WebSocket stack (uvicorn on wsproto there), through the SDK: NeMo's
        # buffered inference of the same audio
        import io

        import soundfile as sf

        from export.streaming import nemo_buffered

        heard, _ = sf.read(io.BytesIO(speech_wav), dtype="float32")
        assert stream(c.url, speech_wav) == tiny_bpe.model.tokenizer.ids_to_text(
            nemo_buffered(tiny_bpe.model, heard, 1.6, 4.0)
        )
    finally:
        c.remove()


def stream(url: str, wav: bytes) -> str:
    """The completed transcript of one explicitly committed streaming session (16-kHz PCM from `wav`)."""
    import base64
    import io

    import soundfile as sf
    from openai import OpenAI

    audio, _ = sf.read(io.BytesIO(wav), dtype="int16")
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        pcm = {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}
        conn.session.update(session={"type": "transcription", "audio": {"input": pcm}})
        conn.input_audio_buffer.append(audio=base64.b64encode(audio.astype("<i2").tobytes()).decode())
        conn.input_audio_buffer.commit()
        for event in conn:
            assert event.type != "error", event.to_json()
            if event.type == "conversation.item.input_audio_transcription.completed":
                return str(event.transcript)
    return ""


def test_container_demanding_a_gpu_is_not_ready(image: tuple[str, str]) -> None:
    tool, name = image
    c = Container(tool, name, {"ASR_DEVICE": "cuda", "CUDA_VISIBLE_DEVICES": "-1"})  # a GPU host's GPU hidden
    try:
        c.wait("/livez")
        assert httpx.get(c.url + "/readyz", timeout=10).status_code == 503
        status = httpx.post(c.url + "/status", timeout=10).json()
        assert status["ready"] is False and "CUDA" in status["reason"]
    finally:
        c.remove()


@pytest.mark.skipif(not (shutil.which("kubectl") or shutil.which("kustomize")), reason="needs kubectl or kustomize")
def test_kube_play_of_the_rendered_cpu_deployment(
    image: tuple[str, str], speech_wav: bytes, dev_text: str, tmp_path: Path
) -> None:
    """deploy/render.sh cpu, played by `podman kube play` as rendered (non-root, read-only root filesystem,
    settings from its ConfigMap), but for a host port on 127.0.0.1 to reach it: ready, answering as the
    development server does, then torn down."""
    tool, name = image
    if tool != "podman":
        pytest.skip("`kube play` is podman's")
    out = subprocess.run(
        ["bash", "deploy/render.sh", "cpu"], cwd=ROOT, env={**os.environ, "IMAGE": name}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    port = free_port()
    for o in objects:
        if o["kind"] == "Deployment":
            (container,) = o["spec"]["template"]["spec"]["containers"]
            container["ports"][0].update(hostPort=port, hostIP="127.0.0.1")
    played = tmp_path / "asr.yaml"
    played.write_text(yaml.safe_dump_all(objects))
    url = f"http://127.0.0.1:{port}"
    try:
        run = subprocess.run([tool, "kube", "play", str(played)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        logs = subprocess.run([tool, "logs", "asr-pod-0-asr"], capture_output=True, text=True)
        assert httpx.get(url + "/readyz", timeout=5).status_code == 200, logs.stdout[-3000:] + logs.stderr[-3000:]
        assert transcribe(url, speech_wav)["text"] == dev_text
        status = httpx.post(url + "/status", timeout=10).json()
        assert status["providers"] == ["CPUExecutionProvider"]  # ASR_DEVICE=cpu from the ConfigMap
        inside = subprocess.run([tool, "exec", "asr-pod-0-asr", "id", "-u"], capture_output=True, text=True)
        assert inside.stdout.strip() == "1034"
        touch = subprocess.run([tool, "exec", "asr-pod-0-asr", "touch", "/home/bentoml/x"], capture_output=True)
        assert touch.returncode != 0  # the root filesystem is read-only
    finally:
        subprocess.run([tool, "kube", "down", str(played)], capture_output=True, timeout=120)
    assert subprocess.run([tool, "pod", "exists", "asr-pod-0"]).returncode != 0
