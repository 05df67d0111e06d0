"""Optional variants of the fp32 graph, each verified against NeMo like the graph itself.

- optimized: ONNX Runtime's offline graph optimisation (basic level: portable across providers).
- int8: dynamic int8 quantisation of MatMul weights, for CPUs. Not a promised speed-up: on this project's
  AVX2-only test machine int8 was slower than fp32; measure before choosing it.
- fp16: half-precision weights and activations for GPUs (inputs and outputs stay float32).
Quantised variants change the numbers; their parity report says by how much, and the service uses the
fp32 graph unless a variant is chosen explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.verify import FP32_TOLERANCE, Clip, ParityError, measure_parity
from service.manifest import Variant
from service.tokens import Detokenizer

KINDS = ("optimized", "int8", "fp16")
# Quantised graphs are measured against a looser bound and may differ in tokens: the figures are recorded,
# not hidden, and only the optimised fp32 graph is refused when it is not exact.
TOLERANCE = {"optimized": FP32_TOLERANCE, "int8": 2.0, "fp16": 0.5}


def write_variant(kind: str, source: Path, target: Path) -> None:
    if kind == "optimized":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    elif kind == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    elif kind == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(model, str(target))
    else:
        raise ValueError(f"unknown variant {kind!r}; choose from {', '.join(KINDS)}")


def make_variant(
    kind: str,
    directory: Path,
    graph_file: str,
    model: Any,
    clips: Sequence[Clip],
    detokenizer: Detokenizer,
    blank_id: int,
    sample_rate: int,
    reference: Any,
) -> Variant:
    from export.pipeline import ort_runner

    file = f"model.{kind}.onnx"
    write_variant(kind, directory / graph_file, directory / file)
    report, problems = measure_parity(
        model, ort_runner(directory / file), clips, detokenizer, blank_id, sample_rate, TOLERANCE[kind], reference
    )
    if problems and kind == "optimized":
        # an optimised fp32 graph must be as exact as the original
        raise ParityError("the optimized graph does not reproduce NeMo:\n  " + "\n  ".join(problems[:20]))
    note = (
        f"tokens identical to NeMo on {report.identical_tokens}/{report.clips} clips, "
        f"max |Δ log-prob| {report.max_abs_logprob_diff:.2e}"
        + ("" if not problems else f"; not exact ({problems[0]}): measure before use")
    )
    return Variant(file=file, kind=kind, note=note, parity=report)  # type: ignore[arg-type]
