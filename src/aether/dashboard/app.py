"""The dashboard's web app (Starlette): one page, its live feed, and the state as JSON.

Routes:

* ``GET /`` — the page (``static/index.html``), which renders every snapshot it receives;
* ``GET /api/state`` — the newest snapshot as JSON (503 until the first read finished);
* ``GET /api/events`` — server-sent events: one ``state`` event per new snapshot;
* ``GET /static/…`` — the page's script and style sheet;
* ``GET /healthz`` — ``ok``.

The app only serves what its :class:`~aether.dashboard.collector.Collector` read; it accepts
no input that changes anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aether.dashboard.collector import Collector

__all__ = ["create_app"]

_KEEPALIVE = 15.0


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def create_app(collector: Collector) -> Starlette:
    """The ASGI app serving ``collector``'s snapshots (the collector is started and stopped by the caller)."""
    static = resources.files("aether.dashboard") / "static"
    page = (static / "index.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        snapshot = collector.snapshot
        if snapshot is None:
            return _json({"error": "no state read yet"}, 503)
        return _json(snapshot)

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            seen = 0
            while True:
                snapshot = await collector.wait_for_version(seen + 1, timeout=_KEEPALIVE)
                if collector.version > seen and snapshot is not None:
                    seen = collector.version
                    yield b"event: state\ndata: " + msgspec.json.encode(snapshot) + b"\n\n"
                else:
                    yield b": keep-alive\n\n"
                if await request.is_disconnected():
                    return

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/events", events),
        Route("/healthz", healthz),
        Mount("/static", app=StaticFiles(directory=str(static)), name="static"),
    ]
    return Starlette(routes=routes)

