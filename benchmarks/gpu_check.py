"""The GPU check: is the service right and fast on this machine's NVIDIA GPU? One run, one results file.

    python benchmarks/gpu_check.py [--model TAG | --config medium] [--out FILE]
    python benchmarks/gpu_check.py --smoke      # the same code on the CPU in a minute or two (CI runs it)

Measures, for the model (a store tag in $BENTOML_HOME, or the `medium` architecture exported here with seeded
random weights, which needs NeMo):

1. providers: what ONNX Runtime offers and what each session got; the GPU's name;
2. parity against the CPU graph (itself proven equal to NeMo by the export) on 8 clips of 1-25 s, for CUDA fp32
   and TensorRT fp32 and fp16, each through the service's own recognizer (fixed shapes, greedy decoding on the
   device): tokens identical, and max |Δ log-prob|;
3. the raw session's RTFx at batch 1, 8, 32 and 64 per provider (10-s clips), and the cuDNN search modes'
   first-run cost and speed;
4. the service over HTTP (`bentoml serve` on 127.0.0.1, ASR_DEVICE=cuda) at 1, 16, 64 and 128 clients, and
   p50/p95 of one 10-s request;
5. live streams (ws /v1/realtime) at real-time pace, 16, 64 and 128 of them: partial-text latency p50/p95
   against chunk + 0.5 s (benchmarks/streaming.py's load test);
6. peak GPU memory (nvidia-smi, sampled every 0.2 s through the whole run).

Nothing is downloaded: a GPU host needs a Python with the project's runtime packages (pip install -e . --no-deps
over wheels brought along), and the model in its store (`python -m export --config medium` on a machine with
NeMo, then carry $BENTOML_HOME/models). Without espeak-ng the clips are synthetic (parity and speed do not need
speech). `--smoke` uses the tiny test architecture and the CPU provider, runs every section with the GPU code
paths forced on (fixed shapes, greedy head by I/O binding) and small sizes, and writes to a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.http_load import clients, percentile  # noqa: E402
from service.manifest import Manifest  # noqa: E402
from service.recognition.device import CPU, CUDA, TENSORRT, DeviceOptions, Shapes, provider_options  # noqa: E402
from service.recognition.recognizer import Recognizer  # noqa: E402
from tests import speech  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402

RATE = 16000
RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.md"


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the full check on a GPU, or the smoke run on the CPU."""

    device: str  # ASR_DEVICE for the recognizers and the server
    batches: tuple[int, ...]
    clients: tuple[int, ...]
    streams: tuple[int, ...]  # live streams at real-time pace (ws /v1/realtime)
    stream_s: float
    requests: int  # requests per client count
    ten_s_runs: int
    configs: dict[str, DeviceOptions] = field(default_factory=dict)  # parity / raw speed per configuration


def full_plan(cache: Path) -> Plan:
    # batch classes up to 64 and a 10-s bucket, so that the raw session's batches of 10-s clips are shapes the
    # parity recognizers warmed, and TensorRT's engines (one per precision) are built once and read from the
    # cache by the raw sessions
    gpu = DeviceOptions(buckets_s=(1.0, 2.0, 4.0, 8.0, 10.0, 15.0, 30.0), batch_max=64)
    return Plan(
        "cuda",
        (1, 8, 32, 64),
        (1, 16, 64, 128),
        (16, 64, 128),
        20.0,
        256,
        20,
        {
            "CUDA fp32": gpu,
            "TensorRT fp32": replace(gpu, tensorrt="fp32", tensorrt_cache=str(cache)),
            "TensorRT fp16": replace(gpu, tensorrt="fp16", tensorrt_cache=str(cache)),
        },
    )


def smoke_plan() -> Plan:
    small = DeviceOptions(buckets_s=(2.0, 8.0, 10.0), batch_max=4)
    return Plan("cpu", (1, 2), (1, 4), (1, 2), 5.0, 8, 3, {"CPU provider, GPU code paths": small})


# ---------------------------------------------------------------------------------------------- audio


def clip(seconds: float, seed: int) -> np.ndarray:
    """espeak-ng Hindi sentences joined up to `seconds` where espeak-ng is installed; else noise shaped like
    speech (syllable-rate bursts), which is all parity and speed need."""
    n = int(seconds * RATE)
    if speech.have_espeak():
        s = speech.SENTENCES
        order = [s[(seed + i) % len(s)] for i in range(12)]
        joined, _ = speech.joined(order, pause_s=0.4)
        return np.tile(joined, int(np.ceil(n / joined.shape[0])))[:n]
    rng = np.random.default_rng(seed)
    envelope = np.repeat(rng.uniform(0, 1, n // 3200 + 1) > 0.3, 3200)[:n]
    return (0.1 * rng.standard_normal(n) * envelope).astype(np.float32)


def parity_clips() -> list[np.ndarray]:
    return [clip(s, i) for i, s in enumerate((1.0, 2.5, 4.0, 6.0, 9.5, 14.0, 19.0, 25.0))]


# ---------------------------------------------------------------------------------------------- GPU memory


class GpuMemory:
    """Peak memory in use on GPU 0 (MiB, nvidia-smi every 0.2 s); None where there is no nvidia-smi."""

    def __init__(self) -> None:
        self.tool = shutil.which("nvidia-smi")
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def query(self, what: str) -> str:
        if self.tool is None:
            return ""
        out = subprocess.run(
            [self.tool, f"--query-gpu={what}", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                used = float(self.query("memory.used"))
                self.peak = max(self.peak or 0.0, used)
            time.sleep(0.2)

    def __enter__(self) -> GpuMemory:
        if self.tool is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# ---------------------------------------------------------------------------------------------- sections


def recognizer(directory: Path, manifest: Manifest, plan: Plan, options: DeviceOptions) -> Recognizer:
    """The service's recognizer on the plan's device; in the smoke run with the GPU code paths forced on."""
    forced = plan.device == "cpu"
    r = Recognizer(
        directory,
        manifest,
        plan.device,
        gpu=options,
        segment_samples=min(30 * RATE, manifest.max_segment_samples),
        shapes=True if forced else None,
        device_greedy=True if forced else None,
    )
    if forced:
        r.single_runs = False
    return r


def parity(directory: Path, manifest: Manifest, plan: Plan, lines: list[str]) -> dict[str, float]:
    """Each configuration against the CPU graph: tokens identical, max |Δ log-prob|, warm-up seconds."""
    clips = parity_clips()
    cpu = Recognizer(directory, manifest, "cpu")
    want = [r.token_ids for r in cpu.infer(clips)]
    want_lp = cpu.logprobs(clips)
    lines += [
        "## Parity with the CPU graph",
        "",
        f"{len(clips)} clips, {sum(c.shape[0] for c in clips) / RATE:.0f} s; the CPU graph is the export's, "
        "proven equal to NeMo.",
        "",
        "| configuration | providers | warm-up s | identical tokens | max abs Δ log-prob |",
        "|---|---|---|---|---|",
    ]
    identical: dict[str, float] = {}
    for name, options in plan.configs.items():
        t = time.perf_counter()
        try:
            r = recognizer(directory, manifest, plan, options)
            if r.not_ready_reason:
                raise RuntimeError(r.not_ready_reason)
            r.warmup()
        except Exception as exc:
            lines.append(f"| {name} | not run: {str(exc).splitlines()[0][:200]} | | | |")
            continue
        warm = time.perf_counter() - t
        got = [x.token_ids for x in r.infer(clips)]
        same = sum(a == b for a, b in zip(want, got, strict=True))
        drift = max(float(np.abs(a - b).max()) for a, b in zip(want_lp, r.logprobs(clips), strict=True))
        identical[name] = same / len(clips)
        lines.append(f"| {name} | {', '.join(r.providers)} | {warm:.1f} | {same}/{len(clips)} | {drift:.2e} |")
    lines.append("")
    return identical


def raw_speed(directory: Path, manifest: Manifest, plan: Plan, lines: list[str]) -> None:
    """The bare session (no service, no greedy head) on batches of 10-s clips, per provider; on CUDA the cuDNN
    search modes too."""
    import onnxruntime as ort

    ten = [clip(10.0, i) for i in range(max(plan.batches))]
    width, names = ten[0].shape[0], [t.name for t in manifest.graph.inputs]
    lines += ["## Raw session", "", "RTFx: seconds of 10-s audio per second of session runs (best of 3).", ""]
    lines += ["| provider | " + " | ".join(f"batch {b}" for b in plan.batches) + " |"]
    lines += ["|---|" + "---|" * len(plan.batches)]
    runs: dict[str, tuple[list[str], DeviceOptions]] = {}
    if plan.device == "cpu":
        runs["CPU"] = ([CPU], next(iter(plan.configs.values())))
    else:
        cuda = plan.configs["CUDA fp32"]
        runs["CUDA fp32"] = ([CUDA, CPU], cuda)
        runs["CUDA fp32, cuDNN heuristic"] = ([CUDA, CPU], replace(cuda, cudnn_search="heuristic"))
        for name, options in plan.configs.items():
            if options.tensorrt:
                runs[name] = ([TENSORRT, CUDA, CPU], options)
    for name, (providers, options) in runs.items():
        # the recognizer's own shapes (so TensorRT's profile, and its cached engine, are the parity run's)
        segment = min(30 * RATE, manifest.max_segment_samples)
        shapes = Shapes.for_model(options.buckets_s, segment, manifest.sample_rate, options.batch_max)
        try:
            with_options = list(zip(providers, provider_options(providers, options, names, shapes), strict=True))
            session = ort.InferenceSession(str(directory / manifest.graph.file), providers=with_options)
            cells = []
            for b in plan.batches:
                audio = np.stack(ten[:b]).astype(np.float32)
                feed = {names[0]: audio, names[1]: np.full(b, width, np.int64)}
                t = time.perf_counter()
                session.run(None, feed)  # the first run of a shape: cuDNN's search, TensorRT's engine
                first = time.perf_counter() - t
                best = min(_timed(lambda s=session, f=feed: s.run(None, f)) for _ in range(3))
                cells.append(f"{b * 10 / best:,.0f} (first run {first:.2f} s)")
            got = session.get_providers()[0]
            lines.append(f"| {name} ({got}) | " + " | ".join(cells) + " |")
        except Exception as exc:
            lines.append(f"| {name} | not run: {str(exc).splitlines()[0][:200]} |" + " |" * (len(plan.batches) - 1))
    lines.append("")


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def service(tag: str, directory: Path, plan: Plan, work: Path, lines: list[str]) -> None:
    """The service over HTTP: RTFx per client count, one 10-s request's latency, what it ran on."""
    payload_clips = [clip(5.0 + (i % 11), i) for i in range(plan.requests)]
    payloads = [encode(c, RATE) for c in payload_clips]
    audio_s = sum(c.shape[0] for c in payload_clips) / RATE
    env = {"ASR_MODEL": tag, "ASR_DEVICE": plan.device, "ASR_REALTIME_SESSIONS": str(max(plan.streams) + 4)}
    with Server(env, work / "server.log") as server:
        status = httpx.post(server.url + "/status", timeout=30).json()
        lines += [
            "## Service (HTTP)",
            "",
            f"`bentoml serve`, ASR_DEVICE={plan.device}: providers {status.get('providers')}, on a GPU: "
            f"{status.get('gpu')}. {len(payloads)} requests of 5-15 s ({audio_s:.0f} s) per row.",
            "",
            "| clients | RTFx | p50 s | p95 s |",
            "|---|---|---|---|",
        ]
        asyncio.run(clients(server.url, payloads[:8], 4))  # warm-up
        for concurrency in plan.clients:
            t = time.perf_counter()
            latencies = sorted(asyncio.run(clients(server.url, payloads, concurrency)))
            wall = time.perf_counter() - t
            p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
            lines.append(f"| {concurrency} | {audio_s / wall:,.1f} | {p50:.3f} | {p95:.3f} |")
        ten = encode(clip(10.0, 99), RATE)
        one = sorted(asyncio.run(clients(server.url, [ten] * plan.ten_s_runs, 1)))
        p95 = percentile(one, 0.95)
        lines += ["", f"One 10-s request, one at a time ({len(one)} runs): p50 {statistics.median(one) * 1000:.1f} ms, "
                  f"p95 {p95 * 1000:.1f} ms.", ""]  # fmt: skip
        # live streams (benchmarks/streaming.py's load test): partial-text latency against chunk + 0.5 s
        from benchmarks.streaming import load

        manifest = Manifest.read(directory)
        if manifest.streaming is not None:
            chunk = manifest.streaming.chunk_s
            lines += [
                "## Streaming (ws /v1/realtime)",
                "",
                f"Each stream {plan.stream_s:g} s of audio at real-time pace in 100-ms pieces; partial latency from "
                "the audio completing a chunk to its delta.",
                "",
                f"| streams | partial p50 s | partial p95 s | p95 <= {chunk + 0.5:g} s | final p50 s | final max s | "
                "completed = replayed text |",
                "|---|---|---|---|---|---|---|",
                *load(server.url, directory, manifest, list(plan.streams), plan.stream_s),
                "",
            ]


# ---------------------------------------------------------------------------------------------- main


def model_tag(args: argparse.Namespace) -> str:
    """The store tag to check: --model, else the config exported into a fresh store (needs NeMo)."""
    import bentoml

    if args.model:
        return str(bentoml.models.get(args.model).tag)
    subprocess.run([sys.executable, "-m", "export", "--config", args.config], cwd=ROOT, check=True)
    return str(max(bentoml.models.list(), key=lambda m: m.info.creation_time).tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the same code on the CPU, small sizes")
    parser.add_argument("--model", default="", help="a store tag in $BENTOML_HOME (default: export --config)")
    parser.add_argument("--config", default="", help="export config when no --model (medium; smoke: tiny)")
    parser.add_argument("--out", default="", help=f"results file (default {RESULTS.relative_to(ROOT)}; smoke: temp)")
    args = parser.parse_args()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="asr-gpu-check-"))
    if not args.model:
        os.environ.setdefault("BENTOML_HOME", str(work / "bentoml"))
    args.config = args.config or ("tiny" if args.smoke else "medium")
    plan = smoke_plan() if args.smoke else full_plan(work / "tensorrt")
    out = Path(args.out) if args.out else (work / "gpu_check.md" if args.smoke else RESULTS)

    import bentoml
    import onnxruntime as ort

    tag = model_tag(args)
    directory = Path(bentoml.models.get(tag).path)
    manifest = Manifest.read(directory)
    lines: list[str] = []
    with GpuMemory() as memory:
        gpu_name = memory.query("name") or "none (nvidia-smi absent)"
        lines += [
            f"# GPU check{' (smoke: CPU, GPU code paths forced)' if args.smoke else ''} · {time.strftime('%Y-%m-%d')}",
            "",
            f"GPU: {gpu_name}. Model {tag} ({args.config if not args.model else 'from the store'}). ONNX Runtime "
            f"{ort.__version__}, providers offered: {', '.join(ort.get_available_providers())}. "
            f"Speech: {'espeak-ng Hindi' if speech.have_espeak() else 'synthetic'}.",
            "",
        ]
        identical = parity(directory, manifest, plan, lines)
        raw_speed(directory, manifest, plan, lines)
        service(tag, directory, plan, work, lines)
    peak = f"{memory.peak:,.0f} MiB" if memory.peak is not None else "not measured (no nvidia-smi)"
    lines += [f"Peak GPU memory in use: {peak}. Whole check: {time.perf_counter() - started:.0f} s.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written: {out}")
    if any(v < 1.0 for k, v in identical.items() if "fp16" not in k):
        sys.exit("fp32 tokens differ from the CPU graph's")


if __name__ == "__main__":
    main()
