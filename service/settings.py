"""Service settings: one frozen object, read once from the environment. Every field is in the README table."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Literal

from service.recognition.device import DeviceOptions, nvidia_gpu_present

Device = Literal["auto", "cpu", "cuda"]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    # Store tag of the exported model (python -m export registers it).
    model: str = "stt_hi_conformer_ctc_medium:latest"
    # Several models in one service, comma-separated store tags; the first is the default. Requests choose
    # one by `model` (name or tag) or `language`. Empty: ASR_MODEL alone.
    models: tuple[str, ...] = ()
    # Graph to run: "" for the fp32 model.onnx, or a variant the export made (optimized, int8, fp16).
    variant: str = ""
    # auto: CUDA when it loads, else CPU. cuda: demand the GPU (not ready without it). cpu: never use a GPU.
    device: Device = "auto"
    # ONNX Runtime intra-op threads; 0 lets ORT choose (one per core).
    ort_threads: int = 0
    # CPU: segments waiting together may run side by side, one thread each, in this many lanes (a second,
    # single-thread session of the graph; its memory: docs/benchmarks.md), when the recognizer measures at
    # start that this beats one run on every core. 0: ASR_ORT_THREADS, else one per core. 1: off.
    cpu_lanes: int = 0
    # GPU: let fp32 matrix products use TF32 (Ampere and later; faster, no longer bit-faithful to the CPU graph).
    allow_tf32: bool = False
    # GPU: how cuDNN picks convolution algorithms: exhaustive (timed once per shape, at warm-up), heuristic or
    # default.
    cudnn_search: str = "exhaustive"
    # GPU: run the graph with TensorRT (fp32 or fp16; empty: the CUDA provider only). Needs TensorRT 10's
    # libraries in the image; the first start builds engines for a few minutes, later starts read the cache.
    tensorrt: str = ""
    # GPU: where TensorRT keeps its engines and timing cache (a volume, so restarts reuse them).
    tensorrt_cache: str = "~/.cache/asr/tensorrt"
    # GPU: the lengths in seconds segments are padded to (and batches to 1, 2, 4, ... ASR_BATCH_MAX_SIZE), all
    # run at warm-up, so serving meets no new shape; the model's longest segment is always the last.
    # off: each run padded to its longest segment.
    buckets_s: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
    # Entry worker processes (decoding, resampling, the VAD, HTTP). 0: one per two cores on a host with an NVIDIA
    # GPU (the entry must keep up with it), else 1.
    entry_workers: int = 0
    # Largest upload accepted, in megabytes (checked while the body arrives).
    max_upload_mb: float = 100.0
    # Shortest and longest audio accepted, in seconds (after decoding).
    min_duration_s: float = 0.0
    max_duration_s: float = 3600.0
    # Largest decoded audio accepted: rate x channels x seconds x 4 bytes of float32 at the upload's own rate,
    # in MB; refused from the header (413). 1400 MB takes an hour of 48 kHz stereo. Decoding runs block by
    # block, so a request's memory is one block plus its audio at the model's rate, whatever this says; the
    # limit bounds the decoding work (an hour of 384 kHz stereo is 11 GB of samples from a 6-MB FLAC).
    max_decoded_mb: float = 1400.0
    # Longest piece of audio sent to the model at once; longer audio is cut at quiet points. 0: the model's
    # own limit (max_segment_s in the manifest). Audio up to this length is transcribed exactly as NeMo does.
    segment_s: float = 30.0
    # How audio longer than a segment is cut: vad (Silero VAD: segments hold the speech, with `vad_pad_s` around
    # it; silence, music and noise between them are not sent to the model) or energy (at quiet points; all of
    # the audio is sent).
    segmenter: str = "vad"
    # vad: the segment length long audio is shaped to (speech regions share a segment only while it stays within
    # this; a longer region stays whole): `model`, a typical training utterance of the model (its manifest's
    # `training`; none recorded: as off); seconds; or `off` (segments grow to ASR_SEGMENT_S). Audio up to
    # ASR_SEGMENT_S is never cut.
    segment_target: str = "model"
    # Seconds of audio kept before and after each stretch of speech the VAD finds.
    vad_pad_s: float = 0.25
    # energy: audio longer than a segment is cut at the centre of every pause at least this long (one
    # utterance per segment); an utterance longer than a segment is cut at its quietest point.
    min_pause_s: float = 0.3
    # Containers accepted, as soundfile names (WAV, FLAC, OGG, MP3, ...); empty: anything soundfile decodes.
    formats: tuple[str, ...] = ()
    # Accept only this input sample rate (0: any rate, resampled to the model's).
    require_sample_rate: int = 0
    # Accept only single-channel audio (otherwise channels are averaged).
    require_mono: bool = False
    # Adaptive batching of segments in the recognizer.
    batch_max_size: int = 16
    batch_max_latency_ms: int = 10_000
    # How token log-probabilities become text when a request does not say (`decoding`): greedy (argmax per
    # frame, exactly NeMo's) or beam (CTC prefix beam search, with the model's n-gram LM if it has one).
    decoding: str = "greedy"
    # Beam search: prefixes kept per frame. 0: the model's own (its manifest's `decoder.beam_width`, else 16).
    beam_width: int = 0
    # Beam search: processes that decode (pure Python; one per core keeps the entry's own thread free).
    beam_workers: int = 2
    # Hotwords: weight of a phrase given without one, most phrases per request, most words per phrase.
    hotword_weight: float = 10.0
    max_hotwords: int = 100
    max_hotword_words: int = 5
    # Written form (inverse text normalisation: "पाँच सौ बीस रुपये" -> "₹५२०") when a request does not say (`itn`):
    # off keeps the text exactly the model's. On, it applies to models whose export packed grammars for their
    # language (others answer as spoken). Digits of the written form: devanagari (the grammars') or latin.
    itn: bool = False
    itn_digits: str = "devanagari"
    # Streaming (ws://HOST:PORT/v1/realtime?intent=transcription): most sessions open at once per entry process
    # (beyond: an error event and close code 1013; 0 turns streaming off and loads no streaming graph), the
    # longest session in seconds, and seconds without a client event before the session is closed.
    realtime_sessions: int = 16
    realtime_max_s: float = 3600.0
    realtime_idle_s: float = 60.0
    # Streaming recognition (NeMo's buffered CTC): seconds of audio per chunk (partial text arrives every chunk)
    # and of the buffer it is recognised in; 0: the lengths the export verified against NeMo (1.6 and 4 s).
    stream_chunk_s: float = 0.0
    stream_buffer_s: float = 0.0
    # Requests in flight before 429, and seconds before 504.
    max_concurrency: int = 64
    timeout_s: int = 300
    # API keys: a file of keys (one per line, or sha256:<hex> of one; # comments; re-read when it changes) and/or
    # keys given here, comma-separated (for development). Neither: the service is open to anyone who reaches it.
    api_keys_file: str = ""
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # never in a log line
    # With keys: /metrics needs one too (else it stays open for Prometheus), and /docs.json (else it is open).
    metrics_auth: bool = False
    docs_auth: bool = True
    # Origins whose browsers may call the API (CORS), comma-separated, or * for any; empty: none.
    cors_origins: tuple[str, ...] = ()
    # Jobs (POST /transcribe_job/submit, BentoML's task routes): the folder of the job table, the uploads waiting
    # and the answers (a volume: restarts keep them); jobs queued or running at once (429 beyond); seconds a
    # finished job's answer is kept; jobs each entry process runs at once.
    jobs_dir: str = "~/.cache/asr/jobs"
    jobs_max: int = 100
    job_ttl_s: float = 86400.0
    jobs_running: int = 1
    # Jobs' own limits, apart from the interactive ones: upload MB (over 8 MB it waits on disk as it arrives),
    # audio seconds (4 h), decoded MB at the upload's own rate.
    job_max_upload_mb: float = 512.0
    job_max_duration_s: float = 14400.0
    job_max_decoded_mb: float = 5600.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read ASR_<FIELD> variables (e.g. ASR_MAX_DURATION_S); absent or empty ones keep their defaults."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"ASR_{f.name.upper()}")
            if raw is None or not raw.strip():
                continue
            default = getattr(cls, f.name)
            try:
                if isinstance(default, bool):
                    if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(raw)
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes")
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                    if not math.isfinite(values[f.name]):  # type: ignore[arg-type]
                        raise ValueError(raw)
                elif isinstance(default, tuple):
                    parts = tuple(p.strip() for p in raw.split(",") if p.strip())
                    if f.name == "buckets_s":
                        values[f.name] = () if parts == ("off",) else tuple(float(p) for p in parts)
                    else:
                        values[f.name] = tuple(p.upper() for p in parts) if f.name == "formats" else parts
                else:
                    values[f.name] = raw.strip()
            except ValueError:
                raise SettingsError(f"ASR_{f.name.upper()}={raw!r} is not a valid {type(default).__name__}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values the service cannot work with, naming the variable (one line each)."""

        def bad(name: str, rule: str) -> SettingsError:
            return SettingsError(f"ASR_{name.upper()}={getattr(self, name)!r}: {rule}")

        if self.device not in ("auto", "cpu", "cuda"):
            raise bad("device", "use auto, cpu or cuda")
        if self.segmenter not in ("vad", "energy"):
            raise bad("segmenter", "use vad or energy")
        if self.segment_target not in ("model", "off"):
            try:
                seconds = float(self.segment_target)
            except ValueError:
                seconds = math.nan
            if not seconds > 0:
                raise bad("segment_target", "use model, off or seconds above 0")
        if self.decoding not in ("greedy", "beam"):
            raise bad("decoding", "use greedy or beam")
        if self.itn_digits not in ("devanagari", "latin"):
            raise bad("itn_digits", "use devanagari or latin")
        if not 0 <= self.beam_width <= 512:
            raise bad("beam_width", "use 1 to 512, or 0 for the model's own")
        if not abs(self.hotword_weight) <= 100:
            raise bad("hotword_weight", "use -100 to 100")
        if self.cudnn_search not in ("exhaustive", "heuristic", "default"):
            raise bad("cudnn_search", "use exhaustive, heuristic or default")
        if self.tensorrt not in ("", "fp32", "fp16"):
            raise bad("tensorrt", "use fp32 or fp16, or leave it empty for the CUDA provider alone")
        if self.tensorrt and self.device == "cpu":
            raise bad("tensorrt", "TensorRT runs on a GPU: set ASR_DEVICE to auto or cuda, or leave ASR_TENSORRT empty")
        if any(not (0 < b <= 3600 and math.isfinite(b)) for b in self.buckets_s):
            raise bad("buckets_s", "seconds above 0, comma-separated (e.g. 1,2,4,8,15,30), or off")
        if self.variant not in ("", "optimized", "int8", "fp16"):
            raise bad("variant", "use optimized, int8, fp16 or leave it empty")
        if any(not t or " " in t for t in self.model_tags):
            raise bad("models" if self.models else "model", "store tags are name[:version], without spaces")
        positive = {
            "max_upload_mb": "the largest upload in MB must be above 0",
            "max_duration_s": "the longest audio in seconds must be above 0",
            "max_decoded_mb": "the largest decoded audio in MB must be above 0",
            "min_pause_s": "the shortest pause in seconds must be above 0",
            "batch_max_latency_ms": "the batcher's latency bound in ms must be above 0",
            "timeout_s": "seconds before 504 must be at least 1",
            "max_concurrency": "requests in flight must be at least 1",
            "beam_workers": "beam search needs at least 1 process",
            "max_hotwords": "at least 1 hotword per request",
            "max_hotword_words": "a hotword phrase holds at least 1 word",
            "realtime_max_s": "the longest streaming session in seconds must be above 0",
            "realtime_idle_s": "seconds before an idle streaming session closes must be above 0",
            "jobs_max": "at least 1 job must be allowed to wait",
            "job_ttl_s": "seconds a job's answer is kept must be above 0",
            "jobs_running": "each entry process runs at least 1 job at once",
            "job_max_upload_mb": "a job's largest upload in MB must be above 0",
            "job_max_duration_s": "a job's longest audio in seconds must be above 0",
            "job_max_decoded_mb": "a job's largest decoded audio in MB must be above 0",
        }
        for name, rule in positive.items():
            if not getattr(self, name) > 0:
                raise bad(name, rule)
        for name in (
            "min_duration_s",
            "segment_s",
            "ort_threads",
            "cpu_lanes",
            "require_sample_rate",
            "vad_pad_s",
            "entry_workers",
            "realtime_sessions",
            "stream_chunk_s",
            "stream_buffer_s",
        ):
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        if self.min_duration_s > self.max_duration_s:
            raise bad("min_duration_s", f"must not exceed ASR_MAX_DURATION_S={self.max_duration_s:g}")
        if self.stream_chunk_s and self.stream_buffer_s and self.stream_chunk_s >= self.stream_buffer_s:
            raise bad(
                "stream_chunk_s",
                f"a chunk must be shorter than its buffer (ASR_STREAM_BUFFER_S={self.stream_buffer_s:g})",
            )
        if self.batch_max_size < 2:
            raise bad("batch_max_size", "a batch must hold at least 2 segments")

    @property
    def device_options(self) -> DeviceOptions:
        """What the recognizer's sessions need of these settings on a GPU."""
        return DeviceOptions(
            tf32=self.allow_tf32,
            cudnn_search=self.cudnn_search,
            tensorrt=self.tensorrt,
            tensorrt_cache=os.path.expanduser(self.tensorrt_cache) if self.tensorrt_cache else "",
            buckets_s=self.buckets_s,
            batch_max=self.batch_max_size,
        )

    @property
    def lanes(self) -> int:
        """CPU lanes to offer the recognizer (it keeps them only if they prove faster)."""
        return self.cpu_lanes or self.ort_threads or len(os.sched_getaffinity(0))

    @property
    def model_tags(self) -> tuple[str, ...]:
        return self.models or (self.model,)

    def served_tags(self, arguments: object = None, env: dict[str, str] | None = None) -> tuple[str, ...]:
        """ASR_MODELS / ASR_MODEL when set; else the models a bento was built for (`bentoml build --arg
        models=TAG,...`: BentoML's `use_arguments()`, kept in the bento); else the default."""
        env = dict(os.environ if env is None else env)
        if env.get("ASR_MODELS", "").strip() or env.get("ASR_MODEL", "").strip():
            return self.model_tags
        built = getattr(arguments, "models", "") or getattr(arguments, "model", "")
        return tuple(t.strip() for t in str(built).split(",") if t.strip()) or self.model_tags

    def recognizer_lanes(self) -> int:
        """Segments the recognizer may run at once on the CPU (its lanes; it runs one batch at a time on a GPU)."""
        return self.lanes if self.device == "cpu" or not nvidia_gpu_present() else 1

    def entry_processes(self) -> int:
        """ASR_ENTRY_WORKERS, or by default one process per two cores where the recognizer will have an NVIDIA GPU
        (one entry process decodes and resamples for ~100x real time, a GPU recognises for thousands), else one."""
        if self.entry_workers:
            return self.entry_workers
        if self.device != "cpu" and nvidia_gpu_present():
            return max(1, min(8, len(os.sched_getaffinity(0)) // 2))
        return 1

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def job_max_upload_bytes(self) -> int:
        return int(self.job_max_upload_mb * 1024 * 1024)
