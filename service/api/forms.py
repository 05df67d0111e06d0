"""Multipart forms of the transcription routes, parsed once: a missing or misnamed field is a 400 (BentoML
answers 500, notes §3.1), and a file field holding a string is refused (BentoML would download it as a URL).
A body, and the upload in it, stays in memory up to SPOOL_BYTES and waits in an unnamed temporary file beyond
(an hour of 16-bit WAV is 115 MB, and a job's upload may be 512 MB): what an entry process holds does not grow
with the upload."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from service.api.replies import Scope

SPOOL_BYTES = 8 * 1024 * 1024
READ_BYTES = 1024 * 1024  # the body is fed to the parser in pieces of this size
NO_ROOM = "the server's temporary disk has no room for this upload now; retry later"

# A door that answers from the parsed form: (the request's scope, the form) -> a Starlette response.
FormHandler = Callable[[Scope, Any], Awaitable[Any]]


@dataclass(frozen=True)
class FormRoute:
    file_field: str  # the one file field
    handler: FormHandler  # the door that answers from the parsed form (no second parse, no temp file)
    fields: frozenset[str] = field(default_factory=frozenset)  # every accepted field, the file's included
    style: str = "asr"  # error bodies: "asr" {"error": code, "message": text}, or "openai" (OpenAI's shape)
    allow_unknown: bool = False  # ignore fields not in `fields` (OpenAI clients may send newer options)
    max_body: int = 0  # the largest upload in bytes; 0: the guard's (ASR_MAX_UPLOAD_MB)


async def check_form(scope: Scope, body: IO[bytes], content_type: str, route: FormRoute) -> tuple[str, str | None, Any]:
    """('', None, form) when the form is acceptable (the caller closes it); (problem, field at fault or None,
    None) for a 400."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartParser

    fields = ", ".join(sorted(route.fields))
    if not content_type.lower().startswith("multipart/form-data"):
        problem = f"send multipart/form-data with the audio file in the field '{route.file_field}' (fields: {fields})"
        return problem, None, None

    async def chunks() -> Any:
        body.seek(0)
        while piece := body.read(READ_BYTES):
            yield piece

    parser = MultiPartParser(Headers(scope=scope), chunks(), max_files=4, max_fields=32)
    # Starlette's own threshold is 1 MB: an upload up to SPOOL_BYTES stays in memory as its body did
    parser.spool_max_size = SPOOL_BYTES
    try:
        form = await parser.parse()
    except OSError:
        raise  # the disk, not the form: the guard answers 503
    except Exception:
        return "the multipart body could not be parsed (are a part's headers or file name too long?)", None, None
    problem, param = "", None
    unknown = sorted(set(form.keys()) - route.fields)
    values = form.getlist(route.file_field)
    if unknown and not route.allow_unknown:
        problem, param = f"unknown field(s) {', '.join(unknown)}; accepted fields: {fields}", unknown[0]
    elif len(values) != 1:
        problem, param = f"exactly one file is expected in the field '{route.file_field}'", route.file_field
    elif not isinstance(values[0], UploadFile):
        problem = f"the field '{route.file_field}' must be an uploaded file (URLs are not fetched)"
        param = route.file_field
    if problem:
        await form.close()
        return problem, param, None
    return "", None, form


async def upload_data(upload: Any) -> bytes | BinaryIO:
    """What the pipeline decodes from a form's file (a Starlette UploadFile): its bytes when it is in memory
    anyway, else a handle of its own on the temporary file. The decoding owns that handle and closes it: the
    form is closed when the request ends, maybe while a decoding abandoned by a timeout still reads."""
    if upload.size is not None and upload.size <= SPOOL_BYTES:
        return bytes(await upload.read())
    upload.file.flush()
    handle = os.fdopen(os.dup(upload.file.fileno()), "rb")
    handle.seek(0)
    return handle
