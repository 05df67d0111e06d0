"""What each extra served model costs in memory: `bentoml serve` with the first 1, 2, ... n models of a list.

    BENTOML_HOME=... python benchmarks/models_memory.py --models medium_a:latest,medium_b:latest,medium_c:latest

For each prefix of the list, one server on 127.0.0.1: RSS of the recognizer process, the entry process and
all server processes when ready (models loaded and warmed up) and again after `--requests` 10-s requests to
every model (the sessions' arenas at their working size). Writes benchmarks/results/models.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.verify import speech_like  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402


def role(process: psutil.Process) -> str:
    """entry, recognizer or the arbiter/watcher processes of `bentoml serve` ("other")."""
    command = " ".join(process.cmdline())
    if "_bentoml_impl.worker" not in command:
        return "other"
    return "recognizer" if "asr_recognizer" in command else "entry"


def rss_mb(server: Server) -> dict[str, float]:
    """RSS (MB) of the recognizer worker, the entry worker and every server process together."""
    usage = {"recognizer": 0.0, "entry": 0.0, "total": 0.0}
    for p in server.processes():
        try:
            rss, name = p.memory_info().rss / 2**20, role(p)
        except psutil.NoSuchProcess:
            continue
        usage["total"] += rss
        if name != "other":
            usage[name] += rss
    return usage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True, help="comma-separated store tags (distinct names)")
    parser.add_argument("--requests", type=int, default=8, help="10-s requests to each model before measuring")
    args = parser.parse_args()
    tags = [t.strip() for t in args.models.split(",") if t.strip()]
    wav = encode(speech_like(10.0, 16000, 3), 16000)

    rows = []
    for n in range(1, len(tags) + 1):
        tmp = Path(tempfile.mkdtemp(prefix="models-memory-"))
        env = {"ASR_MODELS": ",".join(tags[:n]), "ASR_DEVICE": "cpu"}
        started = time.monotonic()
        with Server(env, tmp / "server.log") as server:
            ready_s = time.monotonic() - started
            time.sleep(2)
            ready = rss_mb(server)
            with httpx.Client(timeout=300) as client:
                for tag in tags[:n]:
                    for _ in range(args.requests):
                        files = {"audio": ("a.wav", wav, "audio/wav")}
                        r = client.post(server.url + "/transcribe", files=files, data={"model": tag})
                        r.raise_for_status()
            loaded = rss_mb(server)
        rows.append((n, ready_s, ready, loaded))
        print(f"{n} model(s): ready in {ready_s:.1f} s; {ready} -> {loaded}", flush=True)

    base = rows[0]
    lines = [
        f"# Memory per served model ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{psutil.cpu_count()} cores)",
        "",
        f"Models: {', '.join(f'`{t}`' for t in tags)}; `bentoml serve` with the first n of them (`ASR_MODELS`), "
        f"CPU. RSS in MB when ready (loaded, warmed up) and after {args.requests} 10-s requests to every model.",
        "",
        "| models | ready after (s) | recognizer: ready / loaded | entry: ready / loaded | all processes: loaded "
        "| each extra model (recognizer, loaded) |",
        "|---|---|---|---|---|---|",
    ]
    for n, ready_s, ready, loaded in rows:
        extra = (loaded["recognizer"] - base[3]["recognizer"]) / (n - 1) if n > 1 else 0.0
        lines.append(
            f"| {n} | {ready_s:.1f} | {ready['recognizer']:.0f} / {loaded['recognizer']:.0f} | "
            f"{ready['entry']:.0f} / {loaded['entry']:.0f} | {loaded['total']:.0f} | "
            f"{'+' + format(extra, '.0f') if n > 1 else '-'} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results" / "models.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
