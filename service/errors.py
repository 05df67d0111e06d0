"""The errors a client can cause, each with its HTTP status and a stable code; mapped to JSON in one place."""

from __future__ import annotations

from http import HTTPStatus


class ASRError(Exception):
    """Base: a request the service refuses. The message is for the client: no paths, no internals."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    code: str = "internal_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, when one is (OpenAI's error objects name it)

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class BadRequest(ASRError, ValueError):
    status, code = HTTPStatus.BAD_REQUEST, "bad_request"


class EmptyAudio(BadRequest):
    code = "empty_audio"


class UndecodableAudio(BadRequest):
    code = "undecodable_audio"


class UploadTooLarge(ASRError, ValueError):
    status, code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "upload_too_large"


class AudioTooLong(ASRError, ValueError):
    status, code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "audio_too_long"


class AudioTooLarge(ASRError, ValueError):
    """More decoded samples (rate x channels x duration) than ASR_MAX_DECODED_MB allows."""

    status, code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "audio_too_large"


class UnsupportedFormat(ASRError, ValueError):
    status, code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_format"


class AudioTooShort(ASRError, ValueError):
    status, code = HTTPStatus.UNPROCESSABLE_ENTITY, "audio_too_short"


class NotReady(ASRError, RuntimeError):
    status, code = HTTPStatus.SERVICE_UNAVAILABLE, "not_ready"


class Overloaded(ASRError, RuntimeError):
    status, code = HTTPStatus.SERVICE_UNAVAILABLE, "overloaded"


class RecognizerUnavailable(ASRError, RuntimeError):
    status, code = HTTPStatus.SERVICE_UNAVAILABLE, "unavailable"


class JobNotFound(ASRError, LookupError):
    """No job with this id for this caller (another key's job is as unknown as an id never given out)."""

    status, code = HTTPStatus.NOT_FOUND, "job_not_found"


class JobNotFinished(ASRError, RuntimeError):
    """The answer of a job still queued or running, or canceled."""

    status, code = HTTPStatus.CONFLICT, "job_not_finished"


class JobExpired(ASRError, RuntimeError):
    """A finished job whose answer was deleted after ASR_JOB_TTL_S."""

    status, code = HTTPStatus.GONE, "job_expired"


class JobsUnavailable(ASRError, RuntimeError):
    """The job store could not be opened (ASR_JOBS_DIR not writable): jobs are off, the rest serves."""

    status, code = HTTPStatus.SERVICE_UNAVAILABLE, "unavailable"


class TooManyJobs(ASRError, RuntimeError):
    status, code = HTTPStatus.TOO_MANY_REQUESTS, "too_many_jobs"


class ModelMismatch(RuntimeError):
    """The model entry does not match what its manifest promises (raised at start-up, never to clients)."""


# Codes for statuses produced by BentoML itself (validation, concurrency limit, batching, timeout), so that
# every error body has the same shape.
STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "upload_too_large",
    415: "unsupported_format",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal_error",
    503: "overloaded",
    504: "timeout",
}
