"""What BentoML's per-answer media-type computation costs against the recognizer's own work for one request.

BentoML 1.4 works out the media type of every answer of an API returning a list from its type's JSON schema,
built anew at each call. The service once cached it (a patch); this measures whether that saves >= 1 % of a
request's CPU: the computation for each of the recognizer's batch answer types against the CPU of recognising
one 10-s segment with a model (default: the `medium` architecture, exported here with random weights).

    python benchmarks/mime_type.py [--model TAG] [--out benchmarks/results/mime_type.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package


def model_dir(tag: str | None) -> Path:
    import bentoml

    if tag:
        return Path(bentoml.models.get(tag).path)
    from export.__main__ import quiet_nemo
    from export.pipeline import Options, run
    from export.sources import from_config

    quiet_nemo()
    work = Path(tempfile.mkdtemp(prefix="mime-"))
    loaded = from_config("medium", None, work / "build")
    _, _, directory = run(loaded, Options(workdir=work / "medium", register=False, streaming=False))
    return Path(directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a store tag (default: the medium architecture, exported here)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mime_type.md"))
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    import bentoml
    from _bentoml_sdk.io_models import IOMixin

    from benchmarks.report import publish
    from export.variants import cpu_name
    from service.manifest import Manifest
    from service.recognition.recognizer import Recognizer, SegmentResult

    def infer(self: object, items: object) -> object:
        return []

    def arrays(self: object, items: object) -> object:
        return []

    # the recognizer's batch APIs' types (service/service.py), as objects: BentoML reads them from annotations
    infer.__annotations__ = {"items": list[np.ndarray], "return": list[SegmentResult]}
    arrays.__annotations__ = {"items": list[np.ndarray], "return": list[np.ndarray]}

    compute = IOMixin.mime_type.__func__  # type: ignore[attr-defined]
    per_call = {}
    for name, fn in (("greedy results", infer), ("arrays (log-probs, streams)", arrays)):
        spec = bentoml.api(batchable=True)(fn).output_spec
        per_call[name] = min(timeit.repeat(lambda spec=spec: compute(spec), number=100, repeat=5)) / 100

    directory = model_dir(args.model)
    manifest = Manifest.read(directory)
    engine = Recognizer(directory, manifest, "cpu")
    engine.warmup()
    audio = np.random.default_rng(0).normal(0, 0.1, 10 * manifest.sample_rate).astype(np.float32)
    cpu = []
    for _ in range(5):
        started = time.process_time()
        engine.infer([audio])
        cpu.append(time.process_time() - started)
    request_cpu = min(cpu)
    lines = [
        "# BentoML's media-type computation against one request's CPU",
        "",
        f"`python benchmarks/mime_type.py`; model {manifest.name} ({manifest.model_class}) on {cpu_name()}, "
        f"{os.cpu_count()} cores.",
        "",
        "| answer type | media type per call, ms | share of a 10-s segment's recognition CPU |",
        "|---|---|---|",
    ]
    for name, seconds in per_call.items():
        lines.append(f"| {name} | {seconds * 1000:.3f} | {seconds / request_cpu * 100:.2f} % |")
    lines += ["", f"Recognition of one 10-s segment: {request_cpu * 1000:.1f} ms of CPU (best of 5)."]
    return publish(args.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
