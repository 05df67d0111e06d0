"""python -m export.vad: Silero VAD's 16 kHz sequence model rebuilt so that ONNX Runtime runs it fast over a
whole file, written to service/audio/silero_vad/silero_vad_batched.onnx (the file the service ships).

Silero's graph (export/silero_vad/silero_vad_16k_sequence.onnx, from the silero-vad 6.2.3 wheel, MIT licence
beside it) runs its convolutions per 32-ms window: ONNX Runtime loops over 18,750 windows for 10 minutes of
audio, each a tiny GEMM, and that loop is 80 % of its 1.4 s on one core. Here the same weights are laid out
so that every layer is one GEMM over all windows of a block: each convolution (kernel 3, padding 1, over a
window's 4, 4, 2 and 1 frames) becomes one dense matrix from a window's frames x channels to its output
frames x channels. The STFT (Silero's basis is the periodic-Hann-windowed DFT) is left to numpy's real FFT
(service/audio/vad.py), the LSTM and output layer are Silero's own. tests/test_vad.py checks the shipped file
against Silero's graph and against this builder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(__file__).with_name("silero_vad") / "silero_vad_16k_sequence.onnx"
TARGET = ROOT / "service" / "audio" / "silero_vad" / "silero_vad_batched.onnx"


def batched(path: Path = SOURCE) -> bytes:
    """Silero's weights in a graph that runs all windows at once: each convolution (kernel 3, padding 1, over
    a window's 4, 4, 2 and 1 frames) is one dense matrix from the window's frames x channels to its output
    frames x channels, so the encoder is four GEMMs over every window of the block."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    source = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in source.graph.initializer}
    lstm = next(n for n in source.graph.node if n.op_type == "LSTM")
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: npt.NDArray[Any]) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    x, frames = "magnitude", 4  # STFT frames per window
    for layer, stride in enumerate((1, 2, 2, 1)):
        w, b = weights[f"encoder.{layer}.weight"], weights[f"encoder.{layer}.bias"]
        matrix, bias, frames = conv_matrix(w, b, frames, stride)
        nodes.append(helper.make_node("MatMul", [x, const(f"enc{layer}.w", matrix)], [f"enc{layer}.mm"]))
        nodes.append(helper.make_node("Add", [f"enc{layer}.mm", const(f"enc{layer}.b", bias)], [f"enc{layer}.pre"]))
        nodes.append(helper.make_node("Relu", [f"enc{layer}.pre"], [f"enc{layer}.out"]))
        x = f"enc{layer}.out"
    assert frames == 1, "Silero's encoder ends with one frame per window"
    # [windows, 1, 128] is the LSTM's [sequence, batch, input]: the windows are its time steps
    nodes.append(helper.make_node("Unsqueeze", [x, const("batch_axis", np.array([1]))], ["lstm.x"]))
    lstm_inputs = ["lstm.x", *(const(n, weights[n]) for n in lstm.input[1:4]), "", "h", "c"]
    nodes.append(helper.make_node("LSTM", lstm_inputs, ["lstm.y", "hn", "cn"], hidden_size=128))
    nodes.append(helper.make_node("Squeeze", ["lstm.y", const("lstm_axes", np.array([1, 2]))], ["lstm.h"]))
    nodes.append(helper.make_node("Relu", ["lstm.h"], ["lstm.relu"]))
    head = np.ascontiguousarray(weights["output.weight"][:, :, 0].T)  # [128, 1]
    nodes.append(helper.make_node("MatMul", ["lstm.relu", const("out.w", head)], ["out.mm"]))
    nodes.append(helper.make_node("Add", ["out.mm", const("out.b", weights["output.bias"])], ["out.logit"]))
    nodes.append(helper.make_node("Sigmoid", ["out.logit"], ["out.p"]))
    nodes.append(helper.make_node("Reshape", ["out.p", const("flat", np.array([-1]))], ["speech_probs"]))
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "silero_vad_batched",
        [
            helper.make_tensor_value_info("magnitude", f32, ["windows", 4 * 129]),
            helper.make_tensor_value_info("h", f32, [1, 1, 128]),
            helper.make_tensor_value_info("c", f32, [1, 1, 128]),
        ],
        [
            helper.make_tensor_value_info("speech_probs", f32, ["windows"]),
            helper.make_tensor_value_info("hn", f32, [1, 1, 128]),
            helper.make_tensor_value_info("cn", f32, [1, 1, 128]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def conv_matrix(
    weight: npt.NDArray[np.float32], bias: npt.NDArray[np.float32], frames: int, stride: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], int]:
    """Conv1d(kernel 3, padding 1) over `frames` frames as a [frames*in, out_frames*out] matrix (frame-major)."""
    out_ch, in_ch, kernel = weight.shape
    out_frames = (frames + 2 - kernel) // stride + 1
    matrix = np.zeros((frames, in_ch, out_frames, out_ch), np.float32)
    for t in range(out_frames):
        for k in range(kernel):
            source = t * stride - 1 + k
            if 0 <= source < frames:
                matrix[source, :, t, :] = weight[:, :, k].T
    return matrix.reshape(frames * in_ch, out_frames * out_ch), np.tile(bias, out_frames), out_frames


def main() -> int:
    TARGET.write_bytes(batched())
    print(TARGET, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
