"""The exported graph on ONNX Runtime's CPU provider, as the export's parity checks run it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from export.graph import INPUT_NAMES, OUTPUT_NAMES


def ort_runner(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(
        audio: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        logprobs, out_lengths = session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: audio, INPUT_NAMES[1]: lengths})
        return logprobs, out_lengths

    return run
