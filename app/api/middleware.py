"""Pure ASGI middleware: the last-resort guard, the request-size limit and request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses pass through untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import metrics
from app.api.errors import INTERNAL_MESSAGE, RequestTooLarge, error_body, error_response
from app.api.responses import dumps

log = logging.getLogger("isotope.api")


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class GuardMiddleware:
    """Turns any exception no handler took into a JSON 500, without a traceback anywhere.

    Starlette's own ``ServerErrorMiddleware`` re-raises after answering so the server can log the
    traceback; this one answers and stops there. For the lifespan it replaces the traceback that
    starlette would report on a failed start-up with the one-line reason the app recorded.
    """

    def __init__(self, app: ASGIApp, failure: Callable[[], str | None]) -> None:
        self.app = app
        self.failure = failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("%s %s failed: %s: %s", scope.get("method"), scope.get("path"), type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            if not started:
                await _send_json(send, 500, error_body("internal_error", INTERNAL_MESSAGE))

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def clean_send(message: Message) -> None:
            if message["type"] in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
                reason = self.failure() or "see the log above"
                message = {**message, "message": f"Isotope API: {reason}"}
            await send(message)

        try:
            await self.app(scope, receive, clean_send)
        except Exception:  # already reported through lifespan.*.failed, without a traceback
            return


class BodyLimitMiddleware:
    """Rejects request bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._reject(scope, receive, send)
            return
        seen = 0
        rejected = False

        async def counting_receive() -> Message:
            nonlocal seen, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer now and tell the app the client left: whatever it sends is dropped.
                    rejected = True
                    await self._reject(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not rejected:
                raise

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(self._error())(scope, receive, send)

    def _error(self) -> RequestTooLarge:
        return RequestTooLarge(f"the request body is over the limit of {self.limit} bytes (api.max_request_bytes)")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class MetricsMiddleware:
    """Counts requests and times them by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, status_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or "unmatched"  # never the raw path: bounded labels
            metrics.observe_request(scope.get("method", "?"), template, status, time.perf_counter() - started)
