"""The page at /ui: one static HTML file (ui.html: its script and styles inside, nothing fetched from elsewhere)
that uses only the public API: the realtime WebSocket for the microphone, /transcribe with word times for files,
/v1/models for the options. Served without a key: the page asks for one when the service needs it."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

PAGE = Path(__file__).with_name("ui.html")


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"cache-control": "no-cache"})


page_app = Starlette(routes=[Route("/", page, methods=["GET"])])
