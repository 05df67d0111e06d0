"""Stream an audio file to the service at real-time pace with the `openai` SDK and print the text as it comes.

    pip install "openai[realtime]" soundfile soxr
    python examples/realtime_stream.py speech.wav [--url http://127.0.0.1:3000] [--model NAME] [--vad]

The file is sent as OpenAI's default audio/pcm (16-bit, 24 kHz) in 100-ms pieces, one every 100 ms. Without
--vad the whole file is one utterance, committed at its end; with --vad the server cuts utterances where the
speaker pauses (server_vad). Partial text is printed as it arrives, each finished utterance on its own line.
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
import time

import numpy as np
import soundfile as sf
import soxr
from openai import OpenAI

RATE = 24000  # OpenAI's audio/pcm rate
PIECE_S = 0.1


def pcm16(path: str) -> bytes:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = soxr.resample(audio.mean(axis=1), rate, RATE)
    return (np.clip(mono, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--model", default="", help="a served model (default: the server's first)")
    parser.add_argument("--vad", action="store_true", help="let the server find the utterances (server_vad)")
    args = parser.parse_args()
    data = pcm16(args.file)
    client = OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key="unused")
    turn = {"type": "server_vad", "silence_duration_ms": 500} if args.vad else None
    audio_input = {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": turn}
    if args.model:
        audio_input["transcription"] = {"model": args.model}
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        conn.session.update(session={"type": "transcription", "audio": {"input": audio_input}})

        def send() -> None:  # real-time pace, from a thread while the main thread prints events
            piece = int(RATE * PIECE_S) * 2
            started = time.monotonic()
            for k, i in enumerate(range(0, len(data), piece)):
                time.sleep(max(0.0, started + k * PIECE_S - time.monotonic()))
                conn.input_audio_buffer.append(audio=base64.b64encode(data[i : i + piece]).decode())
            if args.vad:  # a second of silence lets the server close the last utterance
                conn.input_audio_buffer.append(audio=base64.b64encode(bytes(RATE * 2)).decode())
            sent.set()
            # the end: commits what is still buffered; with --vad usually nothing is (an error says so)
            conn.input_audio_buffer.commit()

        sent = threading.Event()
        threading.Thread(target=send, daemon=True).start()
        for event in conn:
            if event.type == "conversation.item.input_audio_transcription.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "conversation.item.input_audio_transcription.completed":
                print(f"\n[completed {event.item_id}] {event.transcript}", flush=True)
                if sent.is_set() and not args.vad:
                    break
            elif event.type == "error":
                if sent.is_set() and event.error.code == "input_audio_buffer_commit_empty":
                    break  # nothing was left to commit: every utterance is out
                print(f"\n[error] {event.error.code}: {event.error.message}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
