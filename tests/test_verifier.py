"""The export's verifier must refuse what does not reproduce NeMo: shown on graphs that are wrong in the ways
an export goes wrong (a perturbed weight, NaN output, the blank in the wrong place, a frame out of step), and
on the rules for ties (NeMo's own top two within the tolerance; they excuse only their own clip)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from export.runtime import ort_runner
from export.verify import Clip, ParityError, measure_parity, nemo_reference, pad_batch, verification_clips
from service.manifest import ParityReport, TokenizerSpec
from service.recognition.tokens import Detokenizer
from tests.conftest import Exported

Run = Callable[[npt.NDArray[np.float32], npt.NDArray[np.int64]], tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]


@pytest.fixture(scope="module")
def setup(tiny_bpe: Exported) -> tuple[Exported, list[Clip], list]:  # type: ignore[type-arg]
    clips = verification_clips(tiny_bpe.manifest.sample_rate)[:5]  # 0.5 s ... 30 s and noise
    return tiny_bpe, clips, nemo_reference(tiny_bpe.model, clips)


def measure(setup: tuple[Exported, list[Clip], list], run: Run) -> tuple[ParityReport, list[str]]:  # type: ignore[type-arg]
    exported, clips, reference = setup
    m = exported.manifest
    detok = Detokenizer(m.vocabulary, m.tokenizer)
    return measure_parity(exported.model, run, clips, detok, m.blank_id, m.sample_rate, 1e-3, reference)


def altered(run: Run, change: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]) -> Run:
    def altered_run(audio: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64]) -> tuple:  # type: ignore[type-arg]
        logprobs, out_lengths = run(audio, lengths)
        return change(logprobs.copy()), out_lengths

    return altered_run


def test_the_true_graph_passes(setup: tuple) -> None:  # type: ignore[type-arg]
    report, problems = measure(setup, ort_runner(setup[0].directory / "model.onnx"))
    assert problems == [] and report.identical_tokens == report.clips == 5
    assert report.lengths_s[3] == 30.0  # proven on a clip as long as a segment


def test_a_perturbed_weight_is_refused(setup: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(setup[0].directory / "model.onnx"))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weight = numpy_helper.to_array(biggest).copy()
    weight.flat[:: max(1, weight.size // 50)] += 0.05 * float(weight.std())  # 50 weights nudged by 5 % of a std
    biggest.CopyFrom(numpy_helper.from_array(weight, biggest.name))
    onnx.save(model, str(tmp_path / "perturbed.onnx"))
    report, problems = measure(setup, ort_runner(tmp_path / "perturbed.onnx"))
    assert any("exceeds" in p for p in problems), problems
    assert report.max_abs_logprob_diff > 1e-3


def test_nan_output_never_passes(setup: tuple) -> None:  # type: ignore[type-arg]
    def nan_frame(lp: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        lp[:, 3, :] = np.nan
        return lp

    with pytest.raises(ParityError, match="not finite"):
        measure(setup, altered(ort_runner(setup[0].directory / "model.onnx"), nan_frame))


def test_a_wrong_blank_index_is_refused(setup: tuple) -> None:  # type: ignore[type-arg]
    """The graph puts the blank first instead of last (what a head exported with another vocabulary order does)."""
    _, problems = measure(setup, altered(ort_runner(setup[0].directory / "model.onnx"), lambda lp: np.roll(lp, 1, -1)))
    assert any("argmax" in p for p in problems) and any("tokens differ" in p or "argmax" in p for p in problems)


def test_a_shifted_frame_is_refused(setup: tuple) -> None:  # type: ignore[type-arg]
    def shifted(lp: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.concatenate([lp[:, :1], lp[:, :-1]], axis=1)  # one frame late

    _, problems = measure(setup, altered(ort_runner(setup[0].directory / "model.onnx"), shifted))
    assert any("exceeds" in p for p in problems) and any("argmax" in p for p in problems)


def synthetic(top2_gaps: list[float], flip: list[bool]) -> tuple[list[Clip], list, Run]:  # type: ignore[type-arg]
    """Clips of 10 frames over 3 classes (2 = blank) whose frame 4 has NeMo's top two `gap` apart; the graph
    agrees with NeMo to 1e-6 except that, where `flip`, its frame 4 prefers NeMo's second choice."""
    clips, reference, outputs = [], [], []
    for i, (gap, flipped) in enumerate(zip(top2_gaps, flip, strict=True)):
        ref = np.log(np.full((10, 3), [0.05, 0.05, 0.9], np.float32))
        ref[4] = [np.log(0.45), np.log(0.45) - gap, np.log(0.1)]
        ours = ref + 1e-6
        if flipped:
            ours[4, :2] = ours[4, 1::-1]
        tokens = [int(t) for t in np.unique(ref.argmax(-1)) if t != 2]
        clips.append(Clip(f"clip {i}", np.zeros(1600 + i, np.float32)))  # told apart by length
        reference.append((ref, 10, tokens, "".join("ab"[t] for t in tokens)))
        outputs.append(ours)

    def run(audio: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64]) -> tuple:  # type: ignore[type-arg]
        picked = [outputs[int(n) - 1600] for n in lengths]
        return np.stack(picked), np.full(len(picked), 10)

    return clips, reference, run


def test_ties_are_near_ties_of_nemo_and_excuse_only_their_own_clip() -> None:
    detok = Detokenizer(["a", "b"], TokenizerSpec(kind="characters"))
    clips, reference, run = synthetic([1e-4, 1e-4], [True, False])
    report, problems = measure_parity(None, run, clips, detok, 2, 16000, 1e-3, reference)
    assert report.ties_per_clip == [1, 0] and report.tie_frames == 1 and problems == []  # a near tie: admissible
    clips, reference, run = synthetic([1e-4, 0.5], [True, True])  # clip 1's flip is no tie
    report, problems = measure_parity(None, run, clips, detok, 2, 16000, 1e-3, reference)
    assert report.ties_per_clip == [1, 0]
    assert any(p.startswith("clip 1: frame 4 argmax") for p in problems) and any(
        "clip 1: tokens" in p for p in problems
    )


def test_pad_batch_keeps_lengths() -> None:
    batch, lengths = pad_batch([np.ones(3, np.float32), np.ones(5, np.float32)])
    assert batch.shape == (2, 5) and lengths.tolist() == [3, 5] and batch[0, 3:].sum() == 0
