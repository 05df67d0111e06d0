"""Speech probability of every 32-ms window of a recording, by Silero VAD (v6, its 16 kHz sequence model).

The graph is Silero's weights laid out by export/vad.py so that each layer is one GEMM over all windows of a
block (Silero's own graph loops over the windows: 3.4x slower); the STFT it starts from is numpy's real FFT.
The audio is read in blocks of `BLOCK_WINDOWS` with the LSTM state carried over, so the result equals one pass
of Silero's graph over the whole file, and a caller's stop() is checked between blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.audio.spill import Samples

RATE = 16000  # the model's sample rate
WINDOW = 512  # samples per probability: 32 ms
CONTEXT = 64  # each window is read with the 64 samples before it
FRAME, HOP = 256, 128  # Silero's STFT: 256-sample frames every 128 samples, the four of them within a window
BLOCK_WINDOWS = 1024  # ~33 s of audio per ONNX Runtime call
MODEL_FILE = Path(__file__).with_name("silero_vad") / "silero_vad_batched.onnx"
State = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]  # the LSTM's h and c


def initial_state() -> State:
    return np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32)


class SileroVAD:
    """One ONNX Runtime session on the CPU: the VAD is a small sequential LSTM, faster there than on a GPU."""

    def __init__(self, path: Path = MODEL_FILE, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = ({i.name for i in self.session.get_inputs()}, {o.name for o in self.session.get_outputs()})
        if names != ({"magnitude", "h", "c"}, {"speech_probs", "hn", "cn"}):
            raise ValueError(f"{path} is not the VAD graph export/vad.py writes: {names}")
        self.window = np.hanning(FRAME + 1)[:-1].astype(np.float32)  # periodic Hann, as in Silero's STFT basis

    def probabilities(self, samples: Samples, stop: Callable[[], bool] = lambda: False) -> npt.NDArray[np.float32]:
        """Speech probability of each 512-sample window of 16 kHz audio (the last one zero-padded)."""
        total = samples.shape[0]
        n = -(-total // WINDOW)
        state = initial_state()
        out = np.empty(n, np.float32)
        for lo in range(0, n, BLOCK_WINDOWS):
            if stop():
                raise InterruptedError("stopped")
            hi = min(n, lo + BLOCK_WINDOWS)
            # the block's windows and the 64 samples before them: zeros before the start and after the end
            first = lo * WINDOW - CONTEXT
            block = np.zeros((hi - lo) * WINDOW + CONTEXT, np.float32)
            held = np.asarray(samples[max(0, first) : min(total, hi * WINDOW)])  # (read from disk when there)
            block[max(0, -first) : max(0, -first) + held.shape[0]] = held
            out[lo:hi], state = self.score(block, state)
        return out

    def score(self, block: npt.NDArray[np.float32], state: State) -> tuple[npt.NDArray[np.float32], State]:
        """The probabilities of the windows of `block` (CONTEXT samples, then whole windows), from the LSTM
        `state` before them; and the state after them."""
        feeds = {"magnitude": self._magnitude(block), "h": state[0], "c": state[1]}
        probs, h, c = self.session.run(["speech_probs", "hn", "cn"], feeds)
        return probs, (h, c)

    def _magnitude(self, block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """|STFT| of every window, [windows, 4 frames x 129 bins]. A window is its 576 samples (64 of context)
        reflected by 64 at its end, as Silero pads it; Silero also drops the frame over its left padding."""
        windows = np.lib.stride_tricks.sliding_window_view(block, WINDOW + CONTEXT)[::WINDOW]
        padded = np.concatenate([windows, windows[:, -2 : -2 - CONTEXT : -1]], axis=1)
        frames = np.lib.stride_tricks.sliding_window_view(padded, FRAME, axis=1)[:, ::HOP] * self.window
        magnitude: npt.NDArray[np.float32] = np.abs(np.fft.rfft(frames, axis=2)).reshape(frames.shape[0], -1)
        return magnitude


class StreamVAD:
    """Silero's probabilities along a live stream: each 32-ms window's once its samples are in, equal to
    SileroVAD.probabilities() over the whole recording (the LSTM state and the 64 samples of context carried
    from call to call)."""

    def __init__(self, vad: SileroVAD) -> None:
        self.vad = vad
        self.state = initial_state()
        self.context = np.zeros(CONTEXT, np.float32)
        self.pending = np.zeros(0, np.float32)
        self.windows = 0  # windows scored so far

    def push(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """16 kHz samples in; the probabilities of the windows they complete out."""
        self.pending = np.concatenate([self.pending, samples.astype(np.float32, copy=False)])
        n = self.pending.shape[0] // WINDOW
        if n == 0:
            return np.zeros(0, np.float32)
        block = np.concatenate([self.context, self.pending[: n * WINDOW]])
        probs, self.state = self.vad.score(block, self.state)
        self.context, self.pending = block[-CONTEXT:], self.pending[n * WINDOW :]
        self.windows += n
        return probs
