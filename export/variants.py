"""Optional variants of the fp32 graph, each verified against NeMo like the graph itself.

- optimized: ONNX Runtime's offline graph optimisation (basic level: portable across providers).
- int8: dynamic int8 quantisation of MatMul weights, for CPUs (convolutions stay fp32: int8 convolutions are
  known to break Hindi Conformer models). Its speed depends on the CPU (VNNI): the export measures it against
  the fp32 graph and records it in the manifest with the CPU's name.
- fp16: half-precision weights and activations for GPUs (inputs and outputs stay float32); the log-mel
  front end and its per-feature normalisation stay in fp32 (sums of squares over the 3,000 frames of a 30-s
  segment overflow fp16's 65,504).
Quantised variants change the numbers; their parity report says by how much, and the service uses the
fp32 graph unless a variant is chosen explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from export.runtime import ort_runner
from export.verify import FP32_TOLERANCE, Clip, ParityError, measure_parity
from service.manifest import Variant
from service.recognition.tokens import Detokenizer

KINDS = ("optimized", "int8", "fp16")
# Node names of the front end in the traced graph (the wrapper's `frontend` submodule, export/graph.py).
FRONT_END_SCOPE = "/frontend/"
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

        graph = onnx.load(str(source))
        front_end = [node.name for node in graph.graph.node if node.name.startswith(FRONT_END_SCOPE)]
        if not front_end:
            raise ValueError(f"no {FRONT_END_SCOPE} nodes in the graph: cannot keep the front end in fp32")
        model = convert_float_to_float16(graph, keep_io_types=True, node_block_list=front_end)
        _undo_round_trips(model)
        _drop_repeated_nodes(model)
        onnx.save(model, str(target))
    else:
        raise ValueError(f"unknown variant {kind!r}; choose from {', '.join(KINDS)}")


def _undo_round_trips(model: Any) -> None:
    """The converter keeps blocked (fp32) nodes in fp32 but passes every tensor between them through fp16:
    fp32 -> Cast(fp16) -> Cast(fp32) -> the next blocked node (the graph's input audio included). So the front
    end would still round each intermediate to half precision, and its per-feature sums would overflow. Here
    every such round trip is cut out: the fp32 consumer reads the fp32 tensor itself."""
    import onnx

    graph = model.graph

    def to(node: Any) -> int:
        return int(node.attribute[0].i) if node.op_type == "Cast" else -1

    float32 = onnx.TensorProto.FLOAT
    fp32 = {v.name for v in [*graph.input, *graph.value_info] if v.type.tensor_type.elem_type == float32}
    fp32 |= {t.name for t in graph.initializer if t.data_type == float32}
    fp32 |= {o for n in graph.node if to(n) == float32 for o in n.output}
    produced_by = {o: n for n in graph.node for o in n.output}

    back: dict[str, str] = {}  # output of Cast(fp32) of a Cast(fp16) of an fp32 tensor -> that fp32 tensor
    for node in graph.node:
        if to(node) != onnx.TensorProto.FLOAT:
            continue
        half = produced_by.get(node.input[0])
        if half is not None and to(half) == onnx.TensorProto.FLOAT16:
            source = half.input[0]
            source_node = produced_by.get(source)
            if source in fp32 or (source_node is not None and source_node.op_type != "Cast"):
                back[node.output[0]] = source
    for output in graph.output:  # a graph output keeps its name, and so its cast
        back.pop(output.name, None)
    kept = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] in back)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in back:
                node.input[i] = back[name]
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    kept = [n for n in kept if any(o in used for o in n.output)]  # the fp16 halves nobody reads now
    del graph.node[:]
    graph.node.extend(kept)


def _drop_repeated_nodes(model: Any) -> None:
    """The converter inserts one Cast per fp32 consumer of a tensor, each under the same output and node name
    (invalid ONNX); identical nodes compute the same tensor, so one of each is kept."""
    seen: set[bytes] = set()
    kept = []
    for node in model.graph.node:
        key = node.SerializeToString()
        if key not in seen:
            seen.add(key)
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)


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
    file = f"model.{kind}.onnx"
    write_variant(kind, directory / graph_file, directory / file)
    report, problems = measure_parity(
        model, ort_runner(directory / file), clips, detokenizer, blank_id, sample_rate, TOLERANCE[kind], reference
    )
    if problems and kind == "optimized":
        # an optimised fp32 graph must be as exact as the original
        raise ParityError("the optimized graph does not reproduce NeMo:\n  " + "\n  ".join(problems[:20]))
    speed = None if kind == "fp16" else cpu_speed(directory / graph_file, directory / file, clips)
    note = (
        f"tokens identical to NeMo on {report.identical_tokens}/{report.clips} clips, "
        f"max |Δ log-prob| {report.max_abs_logprob_diff:.2e}"
        + ("" if speed is None else f"; {speed:.2f}x the fp32 graph's speed on this CPU")
        + ("" if not problems else f"; not exact ({problems[0]}): measure before use")
    )
    return Variant(
        file=file,
        kind=kind,  # type: ignore[arg-type]  # one of KINDS (write_variant refused anything else)
        note=note,
        parity=report,
        cpu_speed_vs_fp32=speed,
        measured_on=cpu_name() if speed is not None else "",
    )


def cpu_speed(fp32: Path, variant: Path, clips: Sequence[Clip], rounds: int = 5) -> float:
    """The variant's CPU speed as a multiple of the fp32 graph's, every clip run alone (interleaved_speed)."""
    import numpy as np

    runners = [ort_runner(fp32), ort_runner(variant)]
    inputs = [(c.audio[None, :].astype(np.float32), np.array([c.audio.shape[0]], np.int64)) for c in clips]
    for run in runners:  # warm-up
        run(*inputs[0])
    fp32_run, variant_run = runners
    return interleaved_speed(lambda: [fp32_run(*i) for i in inputs], lambda: [variant_run(*i) for i in inputs], rounds)


def interleaved_speed(baseline: Callable[[], object], candidate: Callable[[], object], rounds: int = 5) -> float:
    """How many times faster `candidate` runs than `baseline`: both run, interleaved round by round (this
    machine's speed drifts over minutes); the median of the per-round ratios."""
    import statistics
    import time

    ratios = []
    for _ in range(rounds):
        walls = []
        for run in (baseline, candidate):
            started = time.perf_counter()
            run()
            walls.append(time.perf_counter() - started)
        ratios.append(walls[0] / walls[1])
    return round(statistics.median(ratios), 3)


def cpu_name() -> str:
    """The processor's model name and whether it has AVX-512 VNNI (int8's speed depends on it)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "CPU")
    return f"{name}{' with AVX-512 VNNI' if 'avx512_vnni' in info else ''}"
