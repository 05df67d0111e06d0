"""The export: one ONNX graph equal to NeMo, for both vocabulary kinds and both encoder kinds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export.describe import max_segment_samples, tensor_frames
from export.frontend import LogMelFrontEnd
from export.graph import max_encoder_frames
from export.runtime import ort_runner
from export.verify import Clip, measure_parity, pad_batch
from service.manifest import Manifest, ParityReport
from service.recognition.tokens import Detokenizer
from tests import speech
from tests.conftest import Exported

ROOT = Path(__file__).resolve().parents[1]
needs_espeak = pytest.mark.skipif(not speech.have_espeak(), reason="espeak-ng and sox are needed for Hindi speech")


def parity(exported: Exported, clips: list[Clip], tolerance: float = 1e-3) -> tuple[ParityReport, list[str]]:
    """The export's own comparison with NeMo, on the stored graph."""
    m = exported.manifest
    detok = Detokenizer(m.vocabulary, m.tokenizer)
    runner = ort_runner(exported.directory / "model.onnx")
    return measure_parity(exported.model, runner, clips, detok, m.blank_id, m.sample_rate, tolerance)


def test_manifest_and_store_entry_are_complete(any_model: Exported) -> None:
    import bentoml

    m = any_model.manifest
    p = m.parity
    assert p.identical_tokens == p.clips and p.identical_text == p.clips
    assert p.max_abs_logprob_diff <= p.tolerance <= 1e-3 and p.batch_identical_tokens
    assert m.sample_rate == 16000 and m.blank_id == len(m.vocabulary)
    assert m.frame_shift_s == pytest.approx(0.01 * m.subsampling_factor)
    assert m.max_segment_s == pytest.approx(m.max_segment_samples / m.sample_rate)
    assert [t.name for t in m.graph.inputs] == ["audio", "audio_lengths"]
    assert [t.name for t in m.graph.outputs] == ["logprobs", "logprobs_lengths"]
    language = "mr" if any_model.config == "tiny_char" else "hi"  # as its config says
    assert m.source["kind"] == "config" and m.language == language and "nemo_toolkit" in m.versions
    assert m.training is None  # random weights: no training lengths to follow

    stored = bentoml.models.get(any_model.tag)
    assert Manifest.read(Path(stored.path)) == m
    assert Path(stored.path_of("model.onnx")).stat().st_size > 100_000
    assert stored.info.labels["language"] == language
    assert stored.info.metadata["parity_identical_tokens"] == f"{p.clips}/{p.clips}"
    # the public contract: plain ONNX Runtime + manifest.json suffice
    raw = json.loads(Path(stored.path_of("manifest.json")).read_text(encoding="utf-8"))
    assert raw["vocabulary"] == m.vocabulary and raw["blank_id"] == m.blank_id


def test_vocabulary_kinds(tiny_bpe: Exported, tiny_char: Exported, tiny_fast: Exported) -> None:
    assert tiny_bpe.manifest.tokenizer.kind == "sentencepiece" and tiny_bpe.manifest.subsampling_factor == 4
    assert tiny_char.manifest.tokenizer.kind == "characters" and tiny_char.manifest.frontend.n_mels == 64
    assert tiny_fast.manifest.subsampling_factor == 8


EDGE_LENGTHS = [1, 100, 159, 160, 161, 399, 400, 401, 511, 512, 513, 16000 - 1, 16000, 16000 + 1]


@pytest.mark.parametrize("n", EDGE_LENGTHS)
def test_features_equal_nemo_preprocessor(tiny_bpe: Exported, n: int) -> None:
    """Our front end vs NeMo's own preprocessor, batched with a longer clip (tolerance 5e-4, seen ~7e-5)."""
    fe = LogMelFrontEnd(tiny_bpe.model.preprocessor.featurizer)
    rng = np.random.default_rng(n)
    batch, lengths = pad_batch([(0.1 * rng.standard_normal(n)).astype(np.float32), speech.noise(1.3, 7)])
    x, lens = torch.from_numpy(batch), torch.from_numpy(lengths)
    with torch.no_grad():
        ref, ref_len = tiny_bpe.model.preprocessor(input_signal=x, length=lens)
        got, got_len = fe(x, lens)
    assert got_len.tolist() == ref_len.tolist()
    assert float((got[..., : ref.shape[-1]] - ref).abs().max()) < 5e-4


@needs_espeak
def test_real_speech_edges_and_batch_equal_nemo(any_model: Exported) -> None:
    """Hindi speech and noise from 0.3 s to 45 s, plus lengths at frame edges: NeMo transcribe() token for
    token, and one zero-padded batch gives every item exactly what it gets alone."""
    long_speech, _ = speech.joined(speech.SENTENCES * 3, pause_s=0.4)
    assert long_speech.shape[0] > 35 * 16000
    clips = [Clip(f"hi {i}", speech.hindi(t)) for i, t in enumerate(speech.SENTENCES[:3])]
    clips += [
        Clip("0.3 s", speech.hindi(speech.SENTENCES[0])[:4800]),
        Clip("long", long_speech[: 45 * 16000]),
        Clip("noise", speech.noise(2.0, 3)),
    ]
    clips += [Clip(f"edge {n}", speech.noise(n / 16000, n)) for n in (100, 399, 400, 401, 16001)]
    report, problems = parity(any_model, clips)
    assert problems == []
    assert report.identical_tokens == len(clips) and report.identical_text == len(clips)
    assert report.batch_identical_tokens and report.batch_max_abs_diff <= 1e-3
    assert report.max_abs_logprob_diff <= 1e-3


def test_transcripts_are_not_trivial(any_model: Exported) -> None:
    """A parity test is only strong if the random model says varied things."""
    run = ort_runner(any_model.directory / "model.onnx")
    logprobs, lengths = run(*pad_batch([speech.noise(3.0, 11, 0.2)]))
    best = logprobs[0, : int(lengths[0])].argmax(-1)
    assert len(set(best.tolist())) >= 5


def test_segment_of_exactly_max_length_equals_nemo(tiny_bpe: Exported) -> None:
    """The longest segment the manifest allows runs and equals NeMo (whose own table grows on demand); one
    sample more would need a longer table than the graph has. (The tensor, not just the valid length, must
    fit: at the old limit the relative-position slice started at -1 and silently took one row.)"""
    m = tiny_bpe.manifest
    assert m.max_segment_samples == max_segment_samples(tiny_bpe.model)
    limit = max_encoder_frames(tiny_bpe.model)
    assert tensor_frames(tiny_bpe.model, m.max_segment_samples) <= limit
    assert tensor_frames(tiny_bpe.model, m.max_segment_samples + 1) > limit  # one more sample would not fit
    clip = Clip("max", speech.noise(m.max_segment_samples / m.sample_rate, 5))
    report, problems = parity(tiny_bpe, [clip])
    assert problems == [] and report.identical_tokens == 1


def _export_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("kind", ["tiny_char", "tiny_bpe"])
def test_nemo_file_source_through_cli(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    exported: Exported = request.getfixturevalue(kind)
    nemo = tmp_path / "my_model.nemo"
    exported.model.save_to(str(nemo))
    # where the model's config says nothing of its training lengths: a training summary beside the checkpoint
    # (demo/train.py writes one), or --train-max-s
    if kind == "tiny_char":
        summary = {"name": "my_model", "utterance_seconds": {"median": 4.0, "max": 9.5}}  # demo/train.py's form
        (tmp_path / "training.json").write_text(json.dumps(summary), encoding="utf-8")
        given: tuple[str, ...] = ()
    else:
        given = ("--train-max-s", "12")
    result = _export_cli("--nemo", str(nemo), "--name", "from_file", *given, home=tmp_path / "store")
    assert result.returncode == 0, result.stderr[-2000:]
    tag = result.stdout.strip().splitlines()[-1]
    assert tag.startswith("from_file:")
    entry = next((tmp_path / "store" / "models" / "from_file").glob("*/manifest.json"))
    manifest = Manifest.model_validate_json(entry.read_text(encoding="utf-8"))
    assert manifest.source["kind"] == "nemo" and len(manifest.source["sha256"]) == 64
    assert manifest.vocabulary == exported.manifest.vocabulary and manifest.tokenizer == exported.manifest.tokenizer
    assert "[export] parity: tokens" in result.stderr
    assert manifest.training is not None
    if kind == "tiny_char":
        assert (manifest.training.max_s, manifest.training.median_s) == (9.5, 4.0)
        assert "training.json" in manifest.training.source
    else:
        assert manifest.training.max_s == 12 and "--train-max-s" in manifest.training.source


def test_training_lengths_come_from_nemos_config_or_a_summary_naming_the_model(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from export.sources import training_durations

    nemo = tmp_path / "m.nemo"
    trained = SimpleNamespace(cfg=OmegaConf.create({"name": "m", "train_ds": {"max_duration": 16.7}}))
    spec = training_durations(trained, nemo)
    assert spec is not None and spec.max_s == 16.7 and "train_ds.max_duration" in spec.source
    bare = SimpleNamespace(cfg=OmegaConf.create({"name": "m", "train_ds": {"max_duration": None}}))
    assert training_durations(bare, nemo) is None  # nothing recorded anywhere
    assert spec.median_s is None and spec.typical_s == 16.7  # NeMo records only the longest
    for summary, found in [
        ({"name": "m", "utterance_seconds": {"median": 3.91, "max": 21.74}}, (21.74, 3.91)),
        ({"name": "m", "utterance_seconds": {"max": 21.74}}, (21.74, None)),
        ({"name": "m", "utterance_seconds": {"median": 30, "max": 21.74}}, (21.74, None)),
        ({"name": "another_model", "utterance_seconds": {"max": 21.74}}, None),  # not this model's training
        ({"name": "m", "utterance_seconds": {"max": "long"}}, None),
        ({"name": "m", "utterance_seconds": {"max": "nan"}}, None),
        ({"name": "m"}, None),
    ]:
        (tmp_path / "training.json").write_text(json.dumps(summary), encoding="utf-8")
        spec = training_durations(bare, nemo)
        assert ((spec.max_s, spec.median_s) if spec else None) == found
    assert _export_cli("--config", "tiny", "--train-max-s", "0", home=tmp_path).returncode == 2


def test_pretrained_offline_is_one_clear_line(tmp_path: Path) -> None:
    result = _export_cli("--pretrained", home=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--nemo" in errors[0] and "--config medium" in errors[0]


@pytest.mark.parametrize("content", [b"", b"not a tarball at all", b"\x1f\x8b\x08garbage"])
def test_corrupt_nemo_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(content)
    result = _export_cli("--nemo", str(bad), home=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error:" in result.stderr and "bad.nemo" in result.stderr


def test_unknown_config_and_variant_are_refused(tmp_path: Path) -> None:
    result = _export_cli("--config", "nope", home=tmp_path)
    assert result.returncode == 1 and "unknown config 'nope'" in result.stderr and "tiny" in result.stderr
    result = _export_cli("--config", "tiny", "--variants", "int4", home=tmp_path)
    assert result.returncode == 2 and "unknown variant" in result.stderr


def test_near_silence_keeps_nemo_tokens(any_model: Exported) -> None:
    """-80 and -70 dBFS noise: log-probs are ill-conditioned in fp32 (NeMo's own fp32 features are 4e-3 from
    float64 there), so the bound is on tokens and text, with log-probs within 1e-2. Digital silence is not
    compared: NeMo normalises a constant feature row by dividing float32 rounding noise by 1e-5, so its
    features there are rounding noise that depends on the reduction order."""
    clips = [Clip("-80 dBFS", speech.noise(3.0, 9, 1e-4)), Clip("-70 dBFS", speech.noise(1.0, 8, 3e-4))]
    report, problems = parity(any_model, clips, tolerance=1e-2)
    assert problems == [] and report.identical_tokens == len(clips) and report.identical_text == len(clips)


def test_variants_are_verified_and_recorded(tiny_bpe: Exported, tmp_path: Path) -> None:
    """The optimised graph must stay exact; int8 and fp16 are measured and recorded, not assumed, on clips up
    to a whole 30-s segment. fp16 keeps the front end in fp32: its per-feature sums over a 30-s segment's
    3,000 frames overflow half precision (NaN, refused by the verifier)."""
    import shutil

    from export.variants import make_variant
    from export.verify import nemo_reference, verification_clips

    shutil.copy(tiny_bpe.directory / "model.onnx", tmp_path / "model.onnx")
    m = tiny_bpe.manifest
    clips = verification_clips(m.sample_rate)[:4]
    assert max(c.audio.shape[0] for c in clips) == 30 * m.sample_rate
    reference = nemo_reference(tiny_bpe.model, clips)
    detok = Detokenizer(m.vocabulary, m.tokenizer)
    args = (tiny_bpe.model, clips, detok, m.blank_id, m.sample_rate, reference)
    optimized = make_variant("optimized", tmp_path, "model.onnx", *args)
    assert optimized.parity.identical_tokens == len(clips) and optimized.parity.max_abs_logprob_diff <= 1e-3
    int8 = make_variant("int8", tmp_path, "model.onnx", *args)
    assert (tmp_path / int8.file).stat().st_size < (tmp_path / "model.onnx").stat().st_size
    assert int8.parity.clips == len(clips) and int8.parity.max_abs_logprob_diff > 0
    assert f"{int8.parity.identical_tokens}/{len(clips)} clips" in int8.note  # the figures travel with it
    # its CPU speed against fp32 is measured on this machine and recorded with the CPU's name
    for variant in (optimized, int8):
        assert variant.cpu_speed_vs_fp32 is not None and 0.1 < variant.cpu_speed_vs_fp32 < 10
        assert variant.measured_on and f"{variant.cpu_speed_vs_fp32:.2f}x the fp32 graph's speed" in variant.note
    fp16 = make_variant("fp16", tmp_path, "model.onnx", *args)
    assert fp16.cpu_speed_vs_fp32 is None  # for GPUs: not measured on the CPU
    # measured on the whole segment and finite (random weights make it imprecise: recorded, not promised)
    assert fp16.parity.lengths_s[3] == 30.0 and 0 < fp16.parity.max_abs_logprob_diff < float("inf")
    import onnx

    graph = onnx.load(str(tmp_path / fp16.file)).graph
    casts = [n for n in graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16]
    half = {o for n in casts for o in n.output}
    assert not any(i in half for n in graph.node if n.name.startswith("/frontend/") for i in n.input)


CONFIGS = ROOT / "tests" / "configs"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("citrinet", "encoder ConvASREncoder is not supported"),
        ("quartznet", "encoder ConvASREncoder is not supported"),
        ("mfcc", "front end AudioToMFCCPreprocessor"),
        ("local_attention", "self_attention_model='rel_pos_local_attn' is not supported"),
    ],
)
def test_models_we_cannot_reproduce_are_refused_before_tracing(
    config: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One `error:` line and exit 1, before anything is traced (no traceback: main() would raise instead)."""
    from export.__main__ import main

    assert main(["--config", str(CONFIGS / f"{config}.yaml"), "--no-register", "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "tracing" not in err and not (tmp_path / "model.onnx").exists()


def test_max_segment_follows_the_attention_kind(tiny_char: Exported, tmp_path: Path) -> None:
    """rel_pos: a table of 2L - 1 rows bounds L frames; abs_pos: L rows bound L frames (both from a
    5000-position config: 200 s at 4x). Read before verification, which may grow NeMo's own table."""
    from export.__main__ import quiet_nemo
    from export.pipeline import Options, run
    from export.sources import from_config

    quiet_nemo()
    loaded = from_config(str(CONFIGS / "abs_pos.yaml"), None, tmp_path / "build")
    manifest, _, directory = run(loaded, Options(workdir=tmp_path / "out", register=False))
    assert loaded.model.encoder._cfg.self_attention_model == "abs_pos"
    assert manifest.max_segment_s == pytest.approx(200.0, abs=0.05)
    assert tiny_char.manifest.max_segment_s == pytest.approx(200.0, abs=0.05)
    # the longest segment fills the table exactly, and the graph equals NeMo on it
    assert tensor_frames(loaded.model, manifest.max_segment_samples) == 5000
    exported = Exported("abs_pos", loaded.model, manifest, "", directory)
    clip = Clip("max", speech.noise(manifest.max_segment_samples / 16000, 5))
    report, problems = parity(exported, [clip])
    assert problems == [] and report.identical_tokens == 1


def test_store_names_are_never_changed_silently(
    tiny_char: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --name BentoML cannot take is refused with a valid suggestion, before anything is loaded; a name
    derived from a file is made valid, and the export says so."""
    from export.__main__ import main

    assert main(["--config", "tiny_char", "--name", "Bad Name!"]) == 2
    assert "error: --name 'Bad Name!' is not a valid store name" in capsys.readouterr().err
    nemo = tmp_path / "My Model.nemo"
    tiny_char.model.save_to(str(nemo))
    assert main(["--nemo", str(nemo)]) == 0
    captured = capsys.readouterr()
    assert "registering it as 'my_model'" in captured.err and captured.out.strip().startswith("my_model:")


def test_an_export_leaves_nothing_in_the_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its scratch (the tokenizer of a config model) and its artifact copy are removed, on success and on
    failure. (Ten exports of the medium architecture left 281 MB before.)"""
    import tempfile

    from export.__main__ import main

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["--config", "tiny"]) == 0  # registered: the artifact is in the store
    assert sorted(p.name for p in scratch.iterdir()) == []
    assert main(["--config", str(CONFIGS / "citrinet.yaml")]) == 1  # refused
    assert sorted(p.name for p in scratch.iterdir()) == []
    capsys.readouterr()


def test_a_variants_speed_is_the_median_of_interleaved_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `cpu_speed_vs_fp32` records (the export test above checks it is measured and written; its value is
    the machine's): fp32 and the variant run in turns, round by round, and the median of the per-round ratios is
    kept, so one slow round (the 30x one here) does not move it. A clock the runs advance stands in for time."""
    import time

    from export.variants import interleaved_speed

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    costs = iter([3.0, 1.0, 6.0, 1.0, 3.0, 2.0, 30.0, 1.0, 3.0, 1.0])  # baseline, candidate; five rounds

    def run() -> None:
        clock[0] += next(costs)

    assert interleaved_speed(run, run, rounds=5) == 3.0  # median of 3, 6, 1.5, 30, 3
