"""Streaming recognition (service/recognition/streaming.py) against NeMo's own buffered CTC inference."""

from __future__ import annotations

import numpy as np
import pytest

from export.streaming import nemo_buffered, ours_buffered
from service.recognition.streaming import BufferedCTC, Geometry, StreamingUnsupported
from tests import speech
from tests.conftest import Exported

pytestmark = pytest.mark.skipif(not speech.have_espeak(), reason="needs espeak-ng and sox")


@pytest.mark.parametrize("piece", [1, 3331, 10**7])  # one sample at a time (short clip), odd pieces, all at once
def test_streamed_tokens_equal_nemo_buffered_inference(any_model: Exported, piece: int) -> None:
    """Fed in any pieces, the streamed transcript's tokens are NeMo FrameBatchASR's (chunk 1.6 s, buffer 4 s)
    on Hindi speech, for every architecture (BPE and character Conformer, FastConformer at 8x)."""
    spec = any_model.manifest.streaming
    assert spec is not None and "3/3" in spec.verified  # the export verified it too
    if piece == 1:
        clips = [speech.hindi(speech.SENTENCES[1])[:20000]]
    else:
        clips = [speech.hindi(speech.SENTENCES[0]), speech.joined(speech.SENTENCES[:5], pause_s=0.7)[0]]
    for audio in clips:
        want = nemo_buffered(any_model.model, audio, spec.chunk_s, spec.buffer_s)
        got = ours_buffered(any_model.directory, spec, any_model.manifest, audio, piece)
        assert got == want


def test_geometry_is_nemos(tiny_bpe: Exported) -> None:
    """The script's arithmetic: 40 steps kept per 1.6-s chunk, 70 steps of delay at 40 ms, 2.8 s of zeros."""
    g = Geometry.of(tiny_bpe.manifest)
    assert (g.chunk_frames, g.buffer_frames, g.tokens_per_chunk, g.delay, g.tail_samples) == (160, 400, 40, 70, 44800)
    assert Geometry.of(tiny_bpe.manifest, 0.8, 2.0).delay == 35
    for chunk, buffer in ((4.0, 4.0), (0.01, 4.0), (1.6, 10_000.0)):
        with pytest.raises(StreamingUnsupported):
            Geometry.of(tiny_bpe.manifest, chunk, buffer)
    # buffers start at the log-mel of silence, the level NeMo's FeatureFrameBufferer means (export/streaming.py)
    assert g.zero_level == tiny_bpe.manifest.streaming.zero_level == -16.635  # type: ignore[union-attr]
    with pytest.raises(StreamingUnsupported, match="no streaming graphs"):
        Geometry.of(tiny_bpe.manifest.model_copy(update={"streaming": None}))


def test_a_finished_utterance_takes_no_more_audio(tiny_bpe: Exported) -> None:
    g = Geometry.of(tiny_bpe.manifest)
    stream = BufferedCTC(g, lambda audio: np.zeros((g.n_mels, audio.shape[0] // g.hop), np.float32), 0)
    assert len(stream.finish()) == 2  # 2.8 s of zeros: one full chunk and the zero-padded rest
    with pytest.raises(RuntimeError):
        stream.feed(np.zeros(100, np.float32))
