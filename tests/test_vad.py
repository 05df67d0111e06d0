"""Silero VAD: the shipped graph computes what Silero's own graph does, and long audio is cut by its verdict."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from demo import augment as aug
from demo.speech import trim
from service.audio import vad as vad_module
from service.audio.segment import SpeechMap, cut_by_speech, split_speech
from service.audio.vad import CONTEXT, WINDOW, SileroVAD
from tests import speech

RATE = 16000
SILERO = vad_module.MODEL_FILE.parents[3] / "export" / "silero_vad" / "silero_vad_16k_sequence.onnx"
needs_speech = pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


def silero(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Silero's own sequence graph over the whole audio in one call: 512-sample windows with 64 of context."""
    n = -(-samples.shape[0] // WINDOW)
    audio = np.zeros(CONTEXT + n * WINDOW, np.float32)
    audio[CONTEXT : CONTEXT + samples.shape[0]] = samples
    windows = np.lib.stride_tricks.sliding_window_view(audio, WINDOW + CONTEXT)[::WINDOW][:n]
    session = ort.InferenceSession(str(SILERO), providers=["CPUExecutionProvider"])
    state = np.zeros((1, 1, 128), np.float32)
    probs: npt.NDArray[np.float32] = session.run(["speech_probs"], {"input": windows, "h": state, "c": state})[0]
    return probs


def sentences_with_gaps(gap: Callable[[int], npt.NDArray[np.float32]]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The test sentences twice (trimmed to their sound), 0.6 s apart, with `gap(n)` (n samples) after the
    sixth; spans in samples."""
    parts: list[npt.NDArray[np.float32]] = [np.zeros(RATE // 2, np.float32)]
    spans, t = [], RATE // 2
    for i, text in enumerate(speech.SENTENCES * 2):
        said = trim(speech.hindi(text))
        pause = gap(12 * RATE) if i == 5 else np.zeros(int(0.6 * RATE), np.float32)
        spans.append((t, t + said.shape[0]))
        parts += [said, pause]
        t += said.shape[0] + pause.shape[0]
    return np.concatenate(parts), spans


@needs_speech
def test_shipped_graph_equals_silero(vad: SileroVAD, monkeypatch: pytest.MonkeyPatch) -> None:
    """Speech, noise and silence, not a whole number of windows, over several blocks (state carried across)."""
    monkeypatch.setattr(vad_module, "BLOCK_WINDOWS", 100)
    audio = np.concatenate([speech.hindi(speech.SENTENCES[1]), speech.noise(2.0, 3), np.zeros(RATE, np.float32)])
    audio = np.concatenate([audio, speech.hindi(speech.SENTENCES[2])])[:-123]
    ours, theirs = vad.probabilities(audio), silero(audio)
    assert ours.shape == theirs.shape == (-(-audio.shape[0] // WINDOW),) and ours.shape[0] > 200
    np.testing.assert_allclose(ours, theirs, atol=1e-4)  # float32 FFT against their DFT matrix: ~1e-5
    assert ours.max() > 0.9 and ours.min() < 0.1  # it heard both speech and its absence


def test_shipped_graph_is_what_export_builds() -> None:
    from export.vad import TARGET, batched

    assert TARGET == vad_module.MODEL_FILE and TARGET.read_bytes() == batched()
    assert (TARGET.parent / "LICENSE").read_text().startswith("MIT License")


def test_stop_is_checked_between_blocks(vad: SileroVAD, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vad_module, "BLOCK_WINDOWS", 10)
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(InterruptedError):
        vad.probabilities(np.zeros(100 * WINDOW, np.float32), stop)
    assert len(asked) == 4  # three blocks ran, the fourth was not started


def probs_of(pattern: list[tuple[float, float]]) -> npt.NDArray[np.float32]:
    """Probabilities from (seconds, probability) runs, one per 32-ms window."""
    return np.concatenate([np.full(round(s * RATE / WINDOW), p, np.float32) for s, p in pattern])


def test_regions_follow_silero_hysteresis() -> None:
    probs = probs_of([(1, 0.1), (2, 0.9), (0.064, 0.2), (1, 0.4), (0.5, 0.1), (0.16, 0.9), (1, 0.1), (1, 0.6)])
    regions = SpeechMap(probs, WINDOW, RATE).regions
    w = WINDOW
    # a 64-ms dip does not end speech, nor do windows between the thresholds (0.4); a 160-ms blip is dropped;
    # speech running to the end ends there
    assert regions == [(31 * w, (31 + 62 + 2 + 31) * w), ((len(probs) - 31) * w, len(probs) * w)]


def test_short_audio_is_one_whole_segment() -> None:
    audio = np.random.default_rng(0).standard_normal(5 * RATE).astype(np.float32)
    speech_map = SpeechMap(probs_of([(2, 0.02), (3, 0.8)])[: -(-audio.shape[0] // WINDOW)], WINDOW, RATE)
    (only,) = split_speech(audio, speech_map, 5 * RATE, 0.25)
    assert only.start == 0 and only.samples is audio and only.no_speech_prob == pytest.approx(0.2, abs=1e-6)


def test_long_audio_keeps_speech_and_skips_the_rest() -> None:
    # speech 1-4 s and 4.5-8 s (0.5 s apart: one segment), 8-20 s nothing, speech 20-23 s, silence to 30 s
    probs = probs_of([(1, 0.05), (3, 0.95), (0.5, 0.1), (3.5, 0.97), (12, 0.02), (3, 0.9), (7, 0.05)])
    audio = np.arange(probs.shape[0] * WINDOW, dtype=np.float32)  # each sample says where it came from
    segments = split_speech(audio, SpeechMap(probs, WINDOW, RATE), 10 * RATE, 0.25)
    edges = [e / RATE for s in segments for e in (s.start, s.start + s.samples.shape[0])]
    assert edges == pytest.approx([1 - 0.25, 8 + 0.25, 20 - 0.25, 23 + 0.25], abs=0.04)
    assert all(np.array_equal(s.samples, audio[s.start : s.start + s.samples.shape[0]]) for s in segments)
    assert [s.no_speech_prob for s in segments] == pytest.approx([0.03, 0.1], abs=1e-6)
    assert SpeechMap(probs, WINDOW, RATE).speech_s() == pytest.approx(9.5, abs=0.07)


def test_a_region_longer_than_a_segment_is_cut_where_speech_is_least_likely() -> None:
    # 25 s of speech with a dip at 8.5 s (in the last quarter of a 10-s segment) and one at 17.5 s
    probs = probs_of([(8.5, 0.95), (0.2, 0.6), (8.8, 0.95), (0.2, 0.55), (7.3, 0.95)])
    audio = np.ones(probs.shape[0] * WINDOW, np.float32)
    segments = split_speech(audio, SpeechMap(probs, WINDOW, RATE), 10 * RATE, 0.25)
    cuts = [s.start / RATE for s in segments[1:]]
    assert cuts == pytest.approx([8.6, 17.6], abs=0.1)
    assert all(s.samples.shape[0] <= 10 * RATE for s in segments)
    assert [s.start + s.samples.shape[0] for s in segments[:-1]] == [s.start for s in segments[1:]]


def test_segments_follow_the_training_length_and_end_in_pauses() -> None:
    # 20 sentences of 3 s, 0.4 s apart (their 0.25-s paddings overlap): 68.5 s, segments of up to 30 s, sentences
    # of up to 8 s in training. Segments hold whole sentences within 8 s and end in the middle of a pause.
    probs = probs_of([(0.5, 0.02)] + [(3, 0.95), (0.4, 0.02)] * 20)
    audio = np.arange(probs.shape[0] * WINDOW, dtype=np.float32)
    speech_map = SpeechMap(probs, WINDOW, RATE)
    segments = split_speech(audio, speech_map, 30 * RATE, 0.25, target_samples=8 * RATE)
    bounds = [(s.start, s.start + s.samples.shape[0]) for s in segments]
    assert all(hi - lo <= 8 * RATE for lo, hi in bounds) and len(segments) == 10  # two sentences (6.4 s) each
    pauses = [(speech_map.regions[k][1], speech_map.regions[k + 1][0]) for k in range(19)]
    for (_, hi), (lo, _) in itertools.pairwise(bounds):  # where padding touches, one ends where the next starts
        assert hi == lo and any(abs(hi - (a + b) / 2) <= 1 for a, b in pauses)
    for lo, hi in speech_map.regions:  # every sentence whole, in one segment
        assert sum(a <= lo and hi <= b for a, b in bounds) == 1
    # without a target (ASR_SEGMENT_TARGET=off) segments grow to the limit, still ending in pauses
    grown = split_speech(audio, speech_map, 30 * RATE, 0.25)
    assert [round(s.samples.shape[0] / RATE, 1) for s in grown] == [27.2, 27.1, 13.6]  # eight sentences, eight, four


def test_a_sentence_longer_than_the_target_is_not_cut() -> None:
    # training utterances of typically 4 s: 12 s of speech between two 3-s sentences stays whole (a cut would
    # fall inside speech) and the short ones do not join it
    probs = probs_of([(1, 0.02), (3, 0.95), (0.6, 0.02), (12, 0.95), (0.6, 0.02), (3, 0.95), (15, 0.02)])
    audio = np.zeros(probs.shape[0] * WINDOW, np.float32)
    segments = split_speech(audio, SpeechMap(probs, WINDOW, RATE), 30 * RATE, 0.25, target_samples=4 * RATE)
    assert [round(s.samples.shape[0] / RATE, 1) for s in segments] == [3.5, 12.5, 3.5]


def test_regions_a_breath_apart_share_a_segment_up_to_twice_the_target() -> None:
    # the VAD parts a 5.7-s sentence at a 0.15-s breath: with a 4-s target it is one segment (up to 8 s); parted
    # by 0.3 s (as sentences are) the two halves are two, longer together than the target; and a breath does
    # not join what would pass twice the target (5 s and 4 s)
    def lengths(layout: list[tuple[float, float]]) -> list[float]:
        probs = probs_of([(1, 0.02), *layout, (1, 0.02), (3, 0.95), (6, 0.02)])
        audio = np.zeros(probs.shape[0] * WINDOW, np.float32)
        segments = split_speech(audio, SpeechMap(probs, WINDOW, RATE), 10 * RATE, 0.25, target_samples=4 * RATE)
        return [round(s.samples.shape[0] / RATE, 1) for s in segments]

    assert lengths([(3, 0.95), (0.15, 0.02), (2.5, 0.95)]) == [6.2, 3.5]
    assert lengths([(3, 0.95), (0.3, 0.02), (2.5, 0.95)]) == [3.4, 2.9, 3.5]
    assert lengths([(5, 0.95), (0.15, 0.02), (4, 0.95)]) == [5.3, 4.3, 3.5]


def loud_with_pauses(layout: list[tuple[float, float]], seed: int = 0) -> npt.NDArray[np.float32]:
    """Noise from (seconds, level) runs: speech-loud stretches and quieter pauses, as babble under a speaker."""
    rng = np.random.default_rng(seed)
    return np.concatenate([level * rng.standard_normal(round(s * RATE)).astype(np.float32) for s, level in layout])


def test_a_region_heard_through_its_pauses_is_cut_in_them() -> None:
    # babble under a speaker: the VAD hears 40 s of speech, but ten 0.5-s stretches 20 dB quieter (the speaker's
    # pauses) lie in it. With segments of typically 4 s the region is cut in the middle of every pause and the
    # pieces share segments within 4 s; nothing is left out.
    layout = [(3.5, 0.3), (0.5, 0.03)] * 10
    audio = loud_with_pauses(layout)
    speech_map = SpeechMap(probs_of([(40, 0.95)])[: -(-audio.shape[0] // WINDOW)], WINDOW, RATE)
    segments = split_speech(audio, speech_map, 30 * RATE, 0.25, target_samples=4 * RATE)
    cuts = [s.start / RATE for s in segments[1:]]
    assert cuts == pytest.approx([3.75 + 4 * k for k in range(9)], abs=0.03)
    assert [s.start + s.samples.shape[0] for s in segments[:-1]] == [s.start for s in segments[1:]]
    assert segments[0].start == 0 and segments[-1].start + segments[-1].samples.shape[0] == audio.shape[0]
    # without a target (ASR_SEGMENT_TARGET=off) the region is cut only where a segment must end
    assert len(split_speech(audio, speech_map, 30 * RATE, 0.25)) == 2


def test_a_stretch_of_background_alone_is_not_a_segment() -> None:
    # as above, with a 6-s stretch of babble alone (10 dB under the speaker, a long pause of his) in the middle:
    # sent alone, its level normalised, the model would hear words in it; it is cut once, in its middle
    layout = [(3.5, 0.3), (0.5, 0.03)] * 4 + [(6, 0.1), (0.5, 0.03)] + [(3.5, 0.3), (0.5, 0.03)] * 4
    audio = loud_with_pauses(layout)
    speech_map = SpeechMap(probs_of([(46, 0.95)])[: -(-audio.shape[0] // WINDOW)], WINDOW, RATE)
    segments = split_speech(audio, speech_map, 30 * RATE, 0.25, target_samples=4 * RATE)
    cuts = [s.start / RATE for s in segments[1:]]
    assert cuts == pytest.approx([3.75, 7.75, 11.75, 19.0, 26.25, 30.25, 34.25], abs=0.03)


def test_only_a_region_longer_than_twice_the_target_is_cut_at_its_pauses() -> None:
    # a 7.5-s sentence with a 0.5-s pause inside (shorter than twice the 4-s target) stays whole: a sentence's
    # inner pauses are not where the model wants it cut; a region without quiet stretches stays whole too
    audio = loud_with_pauses([(3.5, 0.3), (0.5, 0.03), (3.5, 0.3), (3, 0.03), (12, 0.3), (3, 0.03), (12, 0.3)])
    probs = probs_of([(7.5, 0.95), (3, 0.02), (12, 0.95), (3, 0.02), (12, 0.95)])
    segments = split_speech(audio, SpeechMap(probs, WINDOW, RATE), 30 * RATE, 0.25, target_samples=4 * RATE)
    assert [round(s.samples.shape[0] / RATE, 1) for s in segments] == [7.7, 12.5, 12.2]


def test_audio_within_one_segment_is_never_cut_whatever_the_target() -> None:
    probs = probs_of([(3, 0.95), (0.5, 0.02)] * 8)  # 28 s: within ASR_SEGMENT_S = 30 s
    audio = np.zeros(probs.shape[0] * WINDOW, np.float32)
    (only,) = split_speech(audio, SpeechMap(probs, WINDOW, RATE), 30 * RATE, 0.25, target_samples=8 * RATE)
    assert only.start == 0 and only.samples is audio


def test_no_speech_at_all_is_no_segment() -> None:
    audio = np.zeros(60 * RATE, np.float32)
    assert split_speech(audio, SpeechMap(probs_of([(60, 0.01)]), WINDOW, RATE), 10 * RATE, 0.25) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.03, 20), st.floats(0, 1)), min_size=1, max_size=30),
    st.floats(1, 30),
    st.floats(0, 1),
    st.floats(0, 30),
    st.lists(st.sampled_from([0.0, 0.03, 0.3]), min_size=1, max_size=40),
)
def test_segments_hold_all_speech_in_order_within_the_limit(
    runs: list[tuple[float, float]], segment_s: float, pad_s: float, target_s: float, levels: list[float]
) -> None:
    probs = probs_of(runs)
    if probs.size == 0:
        return
    # loud and quiet stretches of 0.4 s (pauses inside long regions to cut at, background stretches), repeated
    loudness = np.resize(np.repeat(np.asarray(levels, np.float32), round(0.4 * RATE)), probs.shape[0] * WINDOW)
    audio = loudness * np.random.default_rng(0).standard_normal(loudness.shape[0]).astype(np.float32)
    speech_map = SpeechMap(probs, WINDOW, RATE)
    segments = split_speech(audio, speech_map, int(segment_s * RATE), pad_s, int(target_s * RATE))
    bounds = [(s.start, s.start + s.samples.shape[0]) for s in segments]
    assert all(0 <= lo < hi <= audio.shape[0] and hi - lo <= int(segment_s * RATE) for lo, hi in bounds)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(bounds))  # in order, never overlapping
    covered = np.zeros(audio.shape[0], bool)
    for lo, hi in bounds:
        covered[lo:hi] = True
    for lo, hi in speech_map.regions:
        assert covered[lo:hi].all()


class FixedVAD:
    """Speech exactly where the test put it, in 16-kHz windows, whatever rate the audio is at."""

    def __init__(self, probs: npt.NDArray[np.float32]) -> None:
        self.probs = probs
        self.heard: list[int] = []

    def probabilities(self, samples: npt.NDArray[np.float32], stop: Callable[[], bool]) -> npt.NDArray[np.float32]:
        self.heard.append(samples.shape[0])
        return self.probs


def test_other_model_rates_are_heard_at_16_khz() -> None:
    probs = probs_of([(5, 0.01), (3, 0.9), (20, 0.01), (2, 0.9), (5, 0.01)])
    fixed = FixedVAD(probs)
    audio = np.zeros(probs.shape[0] * WINDOW * 3, np.float32)  # 48 kHz
    segments, speech_map = cut_by_speech(audio, 48000, 10 * 48000, 0.0, fixed)
    assert fixed.heard == [probs.shape[0] * WINDOW]  # resampled to 16 kHz for the VAD
    starts = [s.start / 48000 for s in segments]
    assert starts == pytest.approx([5.0, 28.0], abs=0.04) and speech_map.speech_s() == pytest.approx(5.0, abs=0.07)


@needs_speech
@pytest.mark.parametrize("kind", ["silence", "tones", "noise"])
def test_real_speech_is_cut_between_sentences_and_the_gap_skipped(vad: SileroVAD, kind: str) -> None:
    rng = np.random.default_rng(4)
    gaps = {
        "silence": lambda n: np.zeros(n, np.float32),
        "tones": lambda n: 0.1 * aug.tones(n, rng),
        "noise": lambda n: speech.noise(n / RATE, 5, 0.02),
    }
    audio, spans = sentences_with_gaps(gaps[kind])
    audio = aug.add_noise(audio, aug.noise("pink", audio.shape[0], rng), 15.0)  # under everything, 15 dB SNR
    segments, speech_map = cut_by_speech(audio, RATE, 10 * RATE, 0.25, vad)
    edges = [e for s in segments for e in (s.start, s.start + s.samples.shape[0])]
    assert not [e for e in edges for lo, hi in spans if lo < e < hi]  # every cut between sentences
    for lo, hi in spans:  # every sentence is sent, whole, in one segment
        assert sum(s.start <= lo and hi <= s.start + s.samples.shape[0] for s in segments) == 1
    gap_lo, gap_hi = spans[5][1], spans[6][0]  # the 12-s stretch after the sixth sentence is not sent
    sent = sum(max(0, min(gap_hi, s.start + s.samples.shape[0]) - max(gap_lo, s.start)) for s in segments)
    assert sent < 1.0 * RATE
    spoken = sum(hi - lo for lo, hi in spans) / RATE
    assert spoken * 0.9 < speech_map.speech_s() < spoken * 1.15


@needs_speech
def test_real_speech_under_babble_is_cut_between_sentences(vad: SileroVAD) -> None:
    # other voices 10 dB under the sentences: the VAD hears speech throughout, yet with the model's 4-s target
    # every cut falls between sentences and no segment holds more than two of them
    audio, spans = sentences_with_gaps(lambda n: np.zeros(n // 20, np.float32))
    voices = [speech.hindi(text) for text in reversed(speech.SENTENCES)]
    babble = aug.noise("babble", audio.shape[0], np.random.default_rng(5), voices)
    mixed = aug.add_noise(audio, babble, 10.0)
    segments, speech_map = cut_by_speech(mixed, RATE, 30 * RATE, 0.25, vad, target_samples=4 * RATE)
    assert len(speech_map.regions) <= 2  # heard as (nearly) one stretch of speech
    edges = [e for s in segments for e in (s.start, s.start + s.samples.shape[0])]
    assert not [e for e in edges for lo, hi in spans if lo < e < hi]
    for lo, hi in spans:
        assert sum(s.start <= lo and hi <= s.start + s.samples.shape[0] for s in segments) == 1
    assert max(sum(s.start <= lo and hi <= s.start + s.samples.shape[0] for lo, hi in spans) for s in segments) <= 2


@pytest.mark.parametrize("piece", [100, 512, 4000])
def test_streamed_probabilities_equal_whole_file(vad: SileroVAD, piece: int) -> None:
    """StreamVAD fed in pieces gives SileroVAD's whole-file probabilities for every complete window."""
    from service.audio.vad import StreamVAD

    audio, _ = speech.joined(speech.SENTENCES[:2], pause_s=0.8)
    audio = audio[: 16000 * 5 + 300]
    whole = vad.probabilities(audio)
    stream = StreamVAD(vad)
    parts = [stream.push(audio[i : i + piece]) for i in range(0, audio.shape[0], piece)]
    streamed = np.concatenate(parts)
    assert streamed.shape[0] == audio.shape[0] // 512 == stream.windows
    assert np.allclose(streamed, whole[: streamed.shape[0]], atol=1e-5)
