"""Decoded audio on disk (service/audio/spill.py): the samples exactly, sliced like an array, read from threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from service.audio.segment import Segment, frame_energy, split, split_speech
from service.audio.spill import DiskSamples, SampleSink
from service.audio.vad import SileroVAD
from tests import speech


def sink_of(pieces: list[np.ndarray], expected: int, spill_bytes: int) -> SampleSink:
    sink = SampleSink(expected, spill_bytes)
    for piece in pieces:
        sink.put(piece)
    return sink


@pytest.mark.parametrize("expected", [0, 100, 10_000, 1_000_000])
def test_a_sink_spills_when_it_would_pass_its_size_and_loses_nothing(expected: int) -> None:
    """Whatever the header promised (nothing, too little, the truth, too much), pieces past the size move to
    disk, and what comes back is every sample in order."""
    rng = np.random.default_rng(0)
    pieces = [rng.standard_normal(int(n)).astype(np.float32) for n in rng.integers(1, 5000, 60)]
    whole = np.concatenate(pieces)
    small = sink_of(pieces[:2], expected, 4 * 10_000).samples()
    assert isinstance(small, DiskSamples if expected > 10_000 else np.ndarray)  # a header's promise goes first
    assert np.array_equal(np.asarray(small), np.concatenate(pieces[:2]))
    big = sink_of(pieces, expected, 4 * 10_000).samples()
    assert isinstance(big, DiskSamples) and big.shape == whole.shape and big.dtype == np.float32
    assert np.array_equal(np.asarray(big), whole)


def test_slices_are_views_read_on_demand() -> None:
    whole = np.arange(100_000, dtype=np.float32)
    disk = sink_of([whole], 0, 1024).samples()
    assert isinstance(disk, DiskSamples)
    for key in (slice(10, 20), slice(-50, None), slice(None, 7), slice(99_990, 200_000), slice(500, 400)):
        view = disk[key]
        assert isinstance(view, DiskSamples) and np.array_equal(np.asarray(view), whole[key])
    assert np.array_equal(np.asarray(disk[1000:2000][10:20]), whole[1010:1020])
    assert np.asarray(disk[5:10], dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError):
        disk[::2]
    with pytest.raises(TypeError):
        disk[3]  # type: ignore[index]


def test_threads_read_their_own_stretches() -> None:
    """Segments are read by the event loop while the VAD may read other stretches in a thread: pread, no shared
    file position."""
    whole = np.random.default_rng(1).standard_normal(400_000).astype(np.float32)
    disk = sink_of([whole], 0, 1024).samples()
    wrong: list[int] = []

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(300):
            lo = int(rng.integers(0, 390_000))
            if not np.array_equal(np.asarray(disk[lo : lo + 5000]), whole[lo : lo + 5000]):
                wrong.append(lo)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


@pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")
def test_cutting_audio_on_disk_is_cutting_it_in_memory() -> None:
    """The energy cutter, the VAD and the VAD's cutter give the same segments (start, samples) from the disk as
    from memory; frame_energy, now a block at a time, equals the whole-array mean square to the bit."""
    audio, _ = speech.joined(speech.SENTENCES * 6, pause_s=0.7)
    audio = np.concatenate([audio, 0.2 * np.random.default_rng(2).standard_normal(40 * 16000).astype(np.float32)])
    disk = sink_of([audio], 0, 1024).samples()
    frame = 320
    n = audio.shape[0] // frame
    reference = (audio[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1)
    assert np.array_equal(frame_energy(disk, frame), reference) and np.array_equal(
        frame_energy(audio, frame), reference
    )

    def same(a: list[Segment], b: list[Segment]) -> bool:
        return len(a) == len(b) and all(
            x.start == y.start
            and x.no_speech_prob == y.no_speech_prob
            and np.array_equal(np.asarray(x.samples), y.samples)
            for x, y in zip(a, b, strict=True)
        )

    assert same(split(disk, 8 * 16000, 16000), split(audio, 8 * 16000, 16000))
    from service.audio.segment import hear

    vad = SileroVAD()
    heard_disk, heard = hear(disk, 16000, vad), hear(audio, 16000, vad)
    assert np.array_equal(heard_disk.probs, heard.probs)
    for target in (0, 4 * 16000):
        assert same(
            split_speech(disk, heard_disk, 10 * 16000, 0.25, target),
            split_speech(audio, heard, 10 * 16000, 0.25, target),
        )


@pytest.mark.parametrize("beam", [False, True])
def test_a_request_holds_at_most_a_window_of_segments(beam: bool) -> None:
    """300 segments on disk through Recognition.run: each is read only when sent, and (beam search) its result
    searched while it still holds its place in the window, so that no more than `window` (4 on a CPU) segments'
    audio or log-probabilities are held at once; results in order. (Before, beam search ran after every
    segment's log-probabilities had come: an hour of the `medium` model's is 270 MB.)"""
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from service.pipeline.client import Readiness, Recognition

    audio = np.arange(300 * 160, dtype=np.float32)
    disk = sink_of([audio], 0, 1024).samples()
    segments = [disk[i * 160 : (i + 1) * 160] for i in range(300)]
    held, peak = [0], [0]

    class Client:
        async def call(self, method: str, items: list[Any]) -> list[Any]:
            assert all(isinstance(x, np.ndarray) for x in items)  # read from disk when sent
            held[0] += len(items)
            peak[0] = max(peak[0], held[0])
            await asyncio.sleep(0.001)
            if not beam:
                held[0] -= len(items)
            return [float(x[0]) for x in items]

        async def status(self) -> dict[str, Any]:
            return {"ready": True, "reason": "", "gpu": False}

    async def search(first: float) -> str:
        await asyncio.sleep(0.003)  # the beam search of a segment takes longer than its recognition
        held[0] -= 1
        return f"text {first:g}"

    recognition = Recognition(Client(), Readiness(), batch_max=16, gpu=False)
    served: Any = SimpleNamespace(name="m")

    async def go() -> list[Any]:
        await recognition.status()
        return await recognition.run(served, segments, "m", None, search if beam else None)

    results = asyncio.run(go())
    assert results == ([f"text {i * 160:g}" for i in range(300)] if beam else [float(i * 160) for i in range(300)])
    assert peak[0] == recognition.window == 4


def test_a_full_disk_refuses_for_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded audio that cannot be written to disk is 503 `overloaded` (retry later), not a crash."""
    import errno
    import tempfile

    from service.audio.decode import Limits, decode
    from service.errors import Overloaded
    from tests.audio_files import encode

    class Full:
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda: Full())
    with pytest.raises(Overloaded, match="disk"):
        sink_of([np.zeros(5000, np.float32)], 0, 1024)
    with pytest.raises(Overloaded, match="disk"):
        decode(encode(np.zeros(9 * 60 * 16000, np.float32), 16000), 16000, Limits())
