"""A real `bentoml serve` in a subprocess on 127.0.0.1, stopped with every process it started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BENTOML = str(Path(sys.executable).with_name("bentoml"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(
        self, env: dict[str, str], log: Path, target: str = ".", wait_ready: bool = True, script: str = ""
    ) -> None:
        self.port = free_port()
        self.script = script  # run this script (with HOST/PORT set) instead of `bentoml serve` directly
        self.url = f"http://127.0.0.1:{self.port}"
        # MALLOC_ARENA_MAX as scripts/serve.sh and the bento's image set it
        self.env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "MALLOC_ARENA_MAX": "2", **env}
        # Each server gets its own BENTOML_HOME (sharing the model store): `bentoml serve` wipes
        # $BENTOML_HOME/prometheus_multiproc_dir at start, so servers sharing a home lose each other's metrics.
        shared = Path(self.env.get("BENTOML_HOME", Path.home() / "bentoml"))
        home = Path(tempfile.mkdtemp(prefix="asr-serve-home-"))
        for store in ("models", "bentos"):
            (shared / store).mkdir(parents=True, exist_ok=True)
            (home / store).symlink_to(shared / store, target_is_directory=True)
        self.env["BENTOML_HOME"] = str(home)
        self.env.setdefault("ASR_JOBS_DIR", str(home / "jobs"))  # each server its own job store, unless shared
        self.log_path, self.target, self.wait_ready = log, target, wait_ready
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.log = self.log_path.open("wb")
        command = (
            ["bash", self.script]
            if self.script
            else [BENTOML, "serve", self.target, "--host", "127.0.0.1", "--port", str(self.port)]
        )
        self.env.update(HOST="127.0.0.1", PORT=str(self.port))
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        path = "/readyz" if self.wait_ready else "/livez"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        logs = self.logs()
        self.stop()
        raise TimeoutError(f"server not up within 300 s:\n{logs[-3000:]}")

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def processes(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """SIGTERM the arbiter and every descendant (workers run in their own process groups), then KILL."""
        if self.proc is None:
            return
        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=20)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.proc.wait(timeout=10)
        self.proc = None
        self.log.close()


def serve_to_the_end(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`bentoml serve` of this checkout with `env` added, run until it exits (for starts that must fail)."""
    full = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", **env}
    cmd = [BENTOML, "serve", ".", "--host", "127.0.0.1", "--port", "0"]
    return subprocess.run(cmd, cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)
