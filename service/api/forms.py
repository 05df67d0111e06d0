"""Multipart forms of the transcription routes, parsed once, in memory: a missing or misnamed field is a 400
(BentoML answers 500, notes §3.1), and a file field holding a string is refused (BentoML would download it as
a URL)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from service.api.replies import Scope

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


async def check_form(scope: Scope, body: bytes, content_type: str, route: FormRoute) -> tuple[str, str | None, Any]:
    """('', None, form) when the form is acceptable (the caller closes it); (problem, field at fault or None,
    None) for a 400."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartParser

    fields = ", ".join(sorted(route.fields))
    if not content_type.lower().startswith("multipart/form-data"):
        problem = f"send multipart/form-data with the audio file in the field '{route.file_field}' (fields: {fields})"
        return problem, None, None

    async def chunks() -> Any:
        yield body

    parser = MultiPartParser(Headers(scope=scope), chunks(), max_files=4, max_fields=32)
    # The body is in memory already (up to ASR_MAX_UPLOAD_MB): an upload over Starlette's 1 MB would otherwise be
    # copied to a temporary file on disk and read back
    parser.spool_max_size = len(body) + 1
    try:
        form = await parser.parse()
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
