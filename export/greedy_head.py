"""python -m export.greedy_head: the small graph that finishes greedy CTC decoding on the device, written to
service/recognition/greedy_head/greedy_head.onnx (the file the service ships).

On a GPU, copying each run's whole log-probability tensor (batch x frames x vocabulary: 6.2 MB for 16
segments of 30 s with the `medium` architecture's 129 columns) back to the host costs more than the argmax
that needs it. This graph takes the model's `logprobs` [B, T, V] where they lie and returns what greedy
decoding, word times and confidence use: each frame's best token `frame_ids` [B, T] (int64, the lowest id on
a tie, as numpy's and torch's argmax) and its log-probability `frame_logprob` [B, T] (float32, the same value
as logprobs at that id). It has no weights, so one file serves every model; tests/test_recognizer.py checks
the shipped file against this builder.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "service" / "recognition" / "greedy_head" / "greedy_head.onnx"
INPUT = "logprobs"
OUTPUTS = ("frame_ids", "frame_logprob")


def build() -> bytes:
    """ArgMax and ReduceMax over the last axis, every dimension dynamic (opset 17, as the exported graphs)."""
    import onnx
    from onnx import TensorProto, helper

    logprobs = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", "frames", "classes"])
    ids = helper.make_tensor_value_info(OUTPUTS[0], TensorProto.INT64, ["batch", "frames"])
    best = helper.make_tensor_value_info(OUTPUTS[1], TensorProto.FLOAT, ["batch", "frames"])
    nodes = [
        helper.make_node("ArgMax", [INPUT], [OUTPUTS[0]], axis=-1, keepdims=0, select_last_index=0),
        helper.make_node("ReduceMax", [INPUT], [OUTPUTS[1]], axes=[-1], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "greedy_head", [logprobs], [ids, best])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="export.greedy_head")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def main() -> None:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(build())
    print(f"wrote {TARGET.relative_to(ROOT)} ({TARGET.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
