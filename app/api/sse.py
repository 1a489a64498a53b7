"""Server-Sent Events: the engine's events as ``event: <type>`` / ``data: <json>`` frames."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from app.api.redact import scrub
from app.api.responses import dumps
from app.api.turn_streams import TurnStream
from app.core.present import jsonable

log = logging.getLogger("isotope.api.sse")

MEDIA_TYPE = "text/event-stream"
# No proxy buffering, no caching: each frame must reach the client as it is produced.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"


def wanted(accept: str) -> bool:
    """True when the Accept header asks for an event stream."""
    return any(part.split(";")[0].strip().lower() == MEDIA_TYPE for part in accept.split(","))


def frame(event: dict[str, Any]) -> bytes:
    """One SSE frame. JSON escapes newlines, so ``data`` is always a single line."""
    data = dumps(jsonable(event)).decode()
    if event.get("type") == "error":
        data = scrub(data)
    return f"event: {event.get('type', 'message')}\ndata: {data}\n\n".encode()


async def stream(turn: TurnStream) -> AsyncIterator[bytes]:
    """The turn's frames; a comment line every few seconds of silence keeps proxies from timing out.

    If the client disconnects, starlette cancels this iterator; the turn itself runs on and is saved.
    """
    finished = False
    try:
        async for batch in turn.batches():
            yield b"".join(frame(event) for event in batch) if batch else KEEPALIVE
        finished = True
    finally:
        if not finished:
            log.info("client left the stream of session %s; the turn continues and will be saved", turn.session_id)
