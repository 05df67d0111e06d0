"""Turn detection along a stream (server VAD): Silero VAD streamed over the audio as it arrives says where speech
starts and, after enough silence, where a turn ends. The detector keeps the last seconds of audio, so that a
turn's audio can reach back to before the VAD heard it (prefix padding)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.audio.vad import WINDOW, SileroVAD, StreamVAD
from service.pipeline.threads import CpuThreads

HISTORY_S = 12  # audio kept for prefix padding (at most 10 s are asked for); trimmed when twice this


@dataclass(frozen=True)
class TurnDetection:
    threshold: float = 0.5  # speech probability at or above which a window is speech
    prefix_padding_ms: int = 300  # audio before the first speech window that belongs to the turn
    silence_duration_ms: int = 500  # silence after speech that ends the turn


@dataclass(frozen=True)
class SpeechStarted:
    start: int  # sample (at the stream's rate) where the turn's audio starts, prefix padding included


@dataclass(frozen=True)
class Speech:
    samples: npt.NDArray[np.float32]  # the turn's next audio


@dataclass(frozen=True)
class SpeechStopped:
    end: int  # sample where the last window the turn ended in ends


TurnEvent = SpeechStarted | Speech | SpeechStopped


class TurnDetector:
    """One stream's turns: `push` the stream's next audio, get what happened in it, in order."""

    def __init__(self, turn: TurnDetection, vad: SileroVAD, rate: int, position: int, threads: CpuThreads) -> None:
        self.turn, self.rate, self.threads = turn, rate, threads
        self.vad = StreamVAD(vad)
        self.speaking = False
        self.silence = 0  # samples of non-speech since speech was last heard
        self.vad_position = position  # samples the VAD has scored (stream position)
        self.history = np.zeros(0, np.float32)  # recent audio (for the prefix padding)
        self.history_start = position

    def end_turn(self) -> None:
        """The client committed the turn itself: the next speech starts a new one."""
        self.speaking, self.silence = False, 0

    async def push(self, samples: npt.NDArray[np.float32]) -> list[TurnEvent]:
        """The stream's next audio (at the VAD's 16 kHz, the rate of every model streaming serves)."""
        self._remember(samples)
        probs = await self.threads.run(self.vad.push, samples)
        turn, events = self.turn, list[TurnEvent]()
        # silence in whole 32-ms windows, rounded down (500 ms: 15 windows, 480 ms of it below the threshold):
        # Silero's probability falls 40-70 ms after the speech does, so the audio is quiet for longer than that
        enough = max(1, turn.silence_duration_ms * self.rate // 1000 // WINDOW) * WINDOW
        pending: tuple[int, int] | None = None  # speech audio scored but not yet handed on
        for p in probs:
            window_start, window_end = self.vad_position, self.vad_position + WINDOW
            self.vad_position = window_end
            if not self.speaking:
                if p >= turn.threshold:
                    self.speaking, self.silence = True, 0
                    first = max(self.history_start, window_start - turn.prefix_padding_ms * self.rate // 1000)
                    events.append(SpeechStarted(first))
                    pending = (first, window_end)
                continue
            pending = (pending[0] if pending else window_start, window_end)
            self.silence = 0 if p >= turn.threshold else self.silence + WINDOW
            if self.silence >= enough:
                self.speaking = False
                events += [Speech(self._recent(*pending)), SpeechStopped(window_end)]
                pending = None
        if pending:
            events.append(Speech(self._recent(*pending)))
        return events

    def _remember(self, samples: npt.NDArray[np.float32]) -> None:
        self.history = np.concatenate([self.history, samples])
        keep = self.rate * HISTORY_S
        if self.history.shape[0] > 2 * keep:
            drop = self.history.shape[0] - keep
            self.history, self.history_start = self.history[drop:], self.history_start + drop

    def _recent(self, start: int, end: int) -> npt.NDArray[np.float32]:
        return self.history[start - self.history_start : end - self.history_start]
