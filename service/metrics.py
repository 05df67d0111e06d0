"""The service's own Prometheus metrics, labelled by model name, next to BentoML's HTTP and batching ones on
/metrics. Label values are bounded: routes are the two API routes, codes the service's error codes (or "ok"),
models the served names ("" when a request was refused before a model was chosen)."""

from __future__ import annotations

import bentoml

# entry: every request to an API route, as answered
REQUESTS = bentoml.metrics.Counter(
    name="asr_requests",
    documentation="API requests by route, HTTP status, error code ('ok' when answered), model and API key id",
    labelnames=["route", "status", "code", "model", "key"],
)
AUTH_FAILURES = bentoml.metrics.Counter(
    name="asr_auth_failures",
    documentation="requests and WebSocket handshakes refused for want of a valid API key (door, reason)",
    labelnames=["door", "reason"],
)
# entry: what was transcribed
AUDIO_SECONDS = bentoml.metrics.Counter(
    name="asr_audio_seconds", documentation="seconds of audio transcribed", labelnames=["model"]
)
SPEECH_SECONDS = bentoml.metrics.Counter(
    name="asr_speech_seconds",
    documentation="seconds of speech the VAD found in that audio (ASR_SEGMENTER=vad)",
    labelnames=["model"],
)
SENT_SECONDS = bentoml.metrics.Counter(
    name="asr_sent_seconds",
    documentation="seconds of that audio sent to the model (the VAD leaves out what lies between segments; "
    "a long segment heard again in pieces counts twice)",
    labelnames=["model"],
)
PROCESSING_SECONDS = bentoml.metrics.Histogram(
    name="asr_processing_seconds",
    documentation="wall time from the upload's bytes to the transcript (decode, cut, recognise, assemble)",
    labelnames=["model"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
REAL_TIME_FACTOR = bentoml.metrics.Histogram(
    name="asr_real_time_factor",
    documentation="processing seconds per second of audio (below 1: faster than real time)",
    labelnames=["model"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
SEGMENTS_PER_REQUEST = bentoml.metrics.Histogram(
    name="asr_segments_per_request",
    documentation="pieces a request's audio was transcribed in",
    labelnames=["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
SEGMENTS_IN_FLIGHT = bentoml.metrics.Gauge(
    name="asr_segments_in_flight",
    documentation="segments sent to the recognizer and not answered yet (its queue and what it runs)",
    labelnames=["model"],
    multiprocess_mode="livesum",
)
REALTIME_SESSIONS = bentoml.metrics.Gauge(
    name="asr_realtime_sessions",
    documentation="streaming sessions open (ws /v1/realtime)",
    multiprocess_mode="livesum",
)
REALTIME_AUDIO_SECONDS = bentoml.metrics.Counter(
    name="asr_realtime_audio_seconds",
    documentation="seconds of audio streamed into transcription sessions",
    labelnames=["model"],
)
# recognizer
SEGMENTS_RUN = bentoml.metrics.Counter(
    name="asr_recognizer_segments",
    documentation="segments the recognizer ran, by model and outcome (run; failed: ONNX Runtime raised)",
    labelnames=["model", "outcome"],
)
SEGMENTS_DROPPED = bentoml.metrics.Counter(
    name="asr_recognizer_segments_dropped",
    documentation="segments dropped from a batch queue unrun: their caller went away",
)
