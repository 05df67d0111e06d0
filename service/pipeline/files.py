"""File transcription: an upload's bytes -> decode -> segment (VAD or energy) -> recognise (batched, in the
model's queue) -> decode tokens (greedy in the recognizer, or beam search here) -> the transcript."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt

from service import metrics
from service.audio.decode import Decoded, Limits, Upload, decode
from service.audio.segment import Segment, cut_by_speech, hear, split
from service.audio.spill import Samples
from service.audio.vad import SileroVAD
from service.catalog import ServedModel, target_samples
from service.errors import AudioTooShort, Overloaded, RecognizerUnavailable
from service.pipeline.client import Recognition, RecognizerBusy, RecognizerGone
from service.pipeline.policy import GREEDY
from service.pipeline.rehear import rehear
from service.pipeline.threads import CpuThreads
from service.recognition.beam import BeamPool, BeamText, Decoding
from service.recognition.recognizer import SegmentResult
from service.recognition.transcript import TimedWord, Transcript, assemble, timed_words

log = logging.getLogger("asr")


@dataclass(frozen=True)
class FileSettings:
    """What file transcription reads of the settings."""

    vad_pad_s: float = 0.25  # vad: seconds kept around each stretch of speech
    min_pause_s: float = 0.3  # energy: cut at pauses at least this long
    beam_width: int = 0  # beam search's width; 0: the model's own
    segment_target: str = "model"  # vad: how long segments of speech regions grow (ASR_SEGMENT_TARGET)


def _checked(raw: list[Any], decoding: Decoding) -> list[Any]:
    """Greedy results as SegmentResult (beam search's BeamText as they are); 503 when the model failed on one."""
    if decoding.beam:
        return raw
    results = [r if isinstance(r, SegmentResult) else SegmentResult.model_validate(r) for r in raw]
    failed = next((r.error for r in results if r.error), "")
    if failed:
        raise RecognizerUnavailable(f"{failed}; retry shortly")
    return results


def _close(data: Upload) -> None:
    if not isinstance(data, bytes):
        data.close()


def _decode_and_close(data: Upload, rate: int, limits: Limits, stop: Callable[[], bool]) -> Decoded:
    """The upload decoded, then its file closed by the thread that read it: a request that ends (timeout, client
    gone) abandons this thread, which may still be reading."""
    try:
        return decode(data, rate, limits, stop)
    finally:
        _close(data)


class FileTranscription:
    """Bytes of an audio file -> its transcript, with a model the policy chose."""

    def __init__(
        self,
        recognition: Recognition,
        limits: Limits,
        vad: SileroVAD | None,
        threads: CpuThreads,
        beams: BeamPool,
        settings: FileSettings,
    ) -> None:
        self.recognition, self.limits, self.vad = recognition, limits, vad  # vad None: cut by energy
        self.threads, self.beams, self.settings = threads, beams, settings

    async def run(
        self,
        data: Upload,
        served: ServedModel,
        decoding: Decoding = GREEDY,
        progress: Callable[[int, int], None] | None = None,
    ) -> Transcript:
        """Decode, cut, recognise (batched, in that model's queue), assemble. `progress(segments done, segments)`
        as the recognizer answers. An upload given as a file is closed here, once decoded."""
        try:
            await self.recognition.check_ready()
        except BaseException:
            _close(data)
            raise
        manifest, rate = served.manifest, served.manifest.sample_rate
        target = target_samples(served, self.settings.segment_target)
        started = time.monotonic()
        stop = threading.Event()
        hearing = None  # the VAD's pass over audio of one segment, run while the model recognises it
        try:
            # abandon_on_cancel: a cancelled request (client gone, timeout) does not wait for its decoding or
            # its VAD, which stop at their next block
            decoded = await anyio.to_thread.run_sync(
                _decode_and_close, data, rate, self.limits, stop.is_set, abandon_on_cancel=True
            )
            if decoded.samples.shape[0] < manifest.frame_shift_s * rate:
                shift_ms = manifest.frame_shift_s * 1000
                raise AudioTooShort(
                    f"audio lasts {decoded.duration_s * 1000:.1f} ms, less than one model step ({shift_ms:g} ms)"
                )
            total = decoded.samples.shape[0]
            speech_s, speech = None, None
            if self.vad is None:
                segments = split(decoded.samples, served.segment_samples, rate, self.settings.min_pause_s)
            elif total <= served.segment_samples:
                # One segment whatever the VAD hears (it adds speech_s and no_speech_prob): no need to wait for it
                segments = [Segment(0, decoded.samples)]
                hearing = asyncio.ensure_future(self.threads.run(hear, decoded.samples, rate, self.vad, stop.is_set))
                hearing.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, even when not awaited
            else:
                segments, speech = await self.threads.run(
                    cut_by_speech,
                    decoded.samples,
                    rate,
                    served.segment_samples,
                    self.settings.vad_pad_s,
                    self.vad,
                    stop.is_set,
                    target,
                )
                speech_s = round(speech.speech_s(), 3)
            results = _checked(
                await self._recognize(served, [s.samples for s in segments], decoding, progress), decoding
            )
            sent_s = sum(s.samples.shape[0] for s in segments) / rate
            if speech is not None and target:
                first = len(segments)

                def words_of(segment: Segment, result: Any) -> list[TimedWord]:
                    start_s, end_s = segment.start / rate, (segment.start + segment.samples.shape[0]) / rate
                    return timed_words(result, served.detok, manifest.frame_shift_s, start_s, end_s)

                async def again(items: list[Samples]) -> list[Any]:
                    nonlocal sent_s
                    sent_s += sum(item.shape[0] for item in items) / rate
                    shifted = None if progress is None else lambda done, n: progress(first + done, first + n)
                    return _checked(await self._recognize(served, items, decoding, shifted), decoding)

                segments, results = await rehear(decoded.samples, segments, results, speech, target, words_of, again)
            if hearing is not None:
                speech = await hearing
                segments = [Segment(0, decoded.samples, speech.no_speech_prob(0, total))]
                speech_s = round(speech.speech_s(), 3)
        except BaseException:
            stop.set()
            if hearing is not None:
                hearing.cancel()
            raise
        transcript = assemble(
            segments, results, served.detok, manifest.frame_shift_s, rate, decoded.duration_s, total, speech_s
        )
        elapsed = time.monotonic() - started
        metrics.AUDIO_SECONDS.labels(model=served.name).inc(decoded.duration_s)
        metrics.SENT_SECONDS.labels(model=served.name).inc(sent_s)
        if speech_s is not None:
            metrics.SPEECH_SECONDS.labels(model=served.name).inc(speech_s)
        metrics.PROCESSING_SECONDS.labels(model=served.name).observe(elapsed)
        metrics.REAL_TIME_FACTOR.labels(model=served.name).observe(elapsed / max(decoded.duration_s, 1e-3))
        metrics.SEGMENTS_PER_REQUEST.labels(model=served.name).observe(len(segments))
        return transcript

    async def _recognize(
        self,
        served: ServedModel,
        segments: list[Samples],
        decoding: Decoding,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        """Greedy results per segment, or (beam search) each segment's text from its log-probabilities, searched
        as they come (a long file's log-probabilities are never all held at once)."""
        method = served.logprobs_method if decoding.beam else served.method
        then: Callable[[Any], Awaitable[Any]] | None = None
        if decoding.beam:
            width = self.settings.beam_width or served.manifest.decoder.beam_width

            async def search(logprobs: npt.NDArray[np.float32]) -> BeamText:
                return await self._beam_search(served, logprobs, decoding, width)

            then = search

        try:
            return await self.recognition.run(served, segments, method, progress, then)
        except RecognizerGone as exc:
            log.warning("recognizer call failed: %r", exc)
            raise RecognizerUnavailable("the recognizer restarted while transcribing; retry shortly") from exc
        except RecognizerBusy as exc:
            raise Overloaded("the recognizer is overloaded; retry shortly") from exc

    async def _beam_search(
        self, served: ServedModel, logprobs: npt.NDArray[np.float32], decoding: Decoding, width: int
    ) -> BeamText:
        """One segment's log-probabilities through beam search, in the decoding processes."""
        columns = len(served.manifest.vocabulary) + 1
        if logprobs.ndim != 2 or logprobs.shape[0] == 0 or logprobs.shape[1] != columns:
            raise RecognizerUnavailable("the model could not run; the server log has the details; retry shortly")
        from concurrent.futures.process import BrokenProcessPool

        try:
            return await self.beams.decode(served.name, logprobs, width, decoding.hotwords)
        except BrokenProcessPool as exc:
            log.error("a beam search process died: %r", exc)
            raise RecognizerUnavailable("beam search failed (its process died); retry shortly") from exc
