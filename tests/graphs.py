"""Synthetic graphs with the service's inputs and outputs, for faults and load that a real export cannot be
made to show on demand: one that ONNX Runtime cannot run for some inputs, and one as slow as a big model."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import Exported

IO = (
    [
        helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"]),
        helper.make_tensor_value_info("audio_lengths", TensorProto.INT64, ["batch"]),
    ],
    lambda classes: [
        helper.make_tensor_value_info("logprobs", TensorProto.FLOAT, ["batch", "frames", classes]),
        helper.make_tensor_value_info("logprobs_lengths", TensorProto.INT64, ["batch"]),
    ],
)


def _save(nodes: list[onnx.NodeProto], constants: list[onnx.TensorProto], classes: int, path: Path) -> None:
    graph = helper.make_graph(nodes, path.stem, IO[0], IO[1](classes), constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def failing_graph(path: Path, vocabulary_size: int, hop: int = 160) -> None:
    """ONNX Runtime cannot run it when the audio's length is not a multiple of `hop` (a Reshape fails at run
    time): warm-up (1 s and 4 s at 16 kHz) passes, a clip of 16,001 samples fails."""
    nodes = [
        helper.make_node("Shape", ["audio"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "minus_one", "hop"], ["frames_shape"], axis=0),
        helper.make_node("Reshape", ["audio", "frames_shape"], ["framed"]),
        helper.make_node("ReduceMean", ["framed"], ["energy"], axes=[2], keepdims=1),
        helper.make_node("Mul", ["energy", "classes"], ["logits"]),
        helper.make_node("LogSoftmax", ["logits"], ["logprobs"], axis=-1),
        helper.make_node("Div", ["audio_lengths", "hop"], ["logprobs_lengths"]),
    ]
    constants = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("hop", TensorProto.INT64, [1], [hop]),
        helper.make_tensor("classes", TensorProto.FLOAT, [vocabulary_size + 1], list(range(vocabulary_size + 1))),
    ]
    _save(nodes, constants, vocabulary_size + 1, path)


def slow_graph(path: Path, vocabulary_size: int, width: int = 2048, layers: int = 2) -> None:
    """About as costly as the `medium` architecture on a CPU (~50 GFLOP for 30 s of audio: frames of 400
    samples every 160 through `layers` dense layers of `width`), with random weights, so a batch of 16
    30-s segments keeps the recognizer busy for many seconds."""
    rng = np.random.default_rng(0)
    window, hop = 400, 160
    shapes = [(width, 1, window)] + [(width, width)] * layers + [(width, vocabulary_size + 1)]
    weights = [(rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32) for shape in shapes]
    names = ["conv"] + [f"dense{i}" for i in range(layers)] + ["head"]
    nodes = [
        helper.make_node("Unsqueeze", ["audio", "one"], ["channel"]),
        helper.make_node("Conv", ["channel", "conv"], ["framed"], strides=[hop]),
        helper.make_node("Transpose", ["framed"], ["x0"], perm=[0, 2, 1]),
    ]
    for i in range(layers):
        nodes += [
            helper.make_node("MatMul", [f"x{i}", f"dense{i}"], [f"h{i}"]),
            helper.make_node("Tanh", [f"h{i}"], [f"x{i + 1}"]),
        ]
    nodes += [
        helper.make_node("MatMul", [f"x{layers}", "head"], ["logits"]),
        helper.make_node("LogSoftmax", ["logits"], ["logprobs"], axis=-1),
        helper.make_node("Sub", ["audio_lengths", "window"], ["rest"]),
        helper.make_node("Div", ["rest", "hop"], ["steps"]),
        helper.make_node("Add", ["steps", "one"], ["logprobs_lengths"]),
    ]
    constants = [numpy_helper.from_array(w, n) for w, n in zip(weights, names, strict=True)]
    constants += [
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("window", TensorProto.INT64, [1], [window]),
        helper.make_tensor("hop", TensorProto.INT64, [1], [hop]),
    ]
    _save(nodes, constants, vocabulary_size + 1, path)


def store_with_graph(exported: Exported, home: Path, make: Callable[[Path, int], None]) -> Path:
    """A model store (BENTOML_HOME) holding `exported`'s entry with its graph replaced by `make`'s."""
    import bentoml

    source = Path(bentoml.models.get(exported.tag).path)
    entry = home / "models" / source.parent.name / source.name
    shutil.copytree(source, entry)
    (home / "models" / source.parent.name / "latest").write_text(source.name)
    make(entry / "model.onnx", len(exported.manifest.vocabulary))
    return home
