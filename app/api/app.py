"""The FastAPI application: ``create_app(settings)``, served by ``isotope serve``.

Construction does no I/O (the engine is built, the manager is not opened), so a configuration
error surfaces before the server binds its port. The lifespan then follows the guide's restart
workflow: open the store, test the connection, restore the active sessions into the engine's
memory, start the expiry task, and only then answer ``/ready`` with 200. On the way out it stops
the expiry task, gives running turns the grace period (see :mod:`app.api.turn_streams`), and closes the
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

import anyio
from fastapi import FastAPI

from app.api import cleanup, errors, redact, routes_chat, routes_console, routes_guide, routes_ops, routes_transfer
from app.api.context import ApiState, Lifecycle
from app.api.edges import EdgeMiddleware, allowed_hosts
from app.api.middleware import BodyLimitMiddleware, GuardMiddleware, MetricsMiddleware
from app.api.responses import JSONBody
from app.api.turn_streams import TurnStreams
from app.config import Settings, load_settings
from app.core.engine import IsotopeEngine
from app.core.postgres_session_manager import SessionManager

log = logging.getLogger("isotope.api")

try:
    VERSION = metadata.version("isotope")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0"

DESCRIPTION = """Isotope's HTTP API: the user guide's session-management endpoints and a chat API
whose turns stream as Server-Sent Events. Errors are `{"error": {"code", "message"}}`.
When `api.token` (or `ISOTOPE_API_TOKEN`) is set, every `/api` route needs `Authorization: Bearer <token>`."""


def create_app(settings: Settings | None = None, *, manager: SessionManager | None = None,
               engine: IsotopeEngine | None = None) -> FastAPI:
    """The API application. A caller may pass its own ``manager`` and/or ``engine`` (then it opens
    and closes that manager itself); otherwise the app builds them and its lifespan opens and closes
    the manager."""
    settings = settings if settings is not None else load_settings()
    redact.register_settings(settings)
    if manager is None and engine is not None:
        manager = engine.manager
    owns_manager = manager is None
    manager = manager or SessionManager(settings, use_postgres=settings.postgres_sessions)
    engine = engine or IsotopeEngine(config=settings, manager=manager, restore=False)
    state = ApiState(settings=settings, manager=manager, engine=engine,
                     lifecycle=Lifecycle(settings.api.shutdown_grace_s))

    app = FastAPI(title="Isotope", version=VERSION, description=DESCRIPTION, default_response_class=JSONBody,
                  lifespan=_lifespan(state, owns_manager))
    app.state.isotope = state
    errors.install(app)
    app.include_router(routes_guide.router)
    app.include_router(routes_transfer.router)
    app.include_router(routes_chat.router)
    app.include_router(routes_ops.router)
    routes_console.install(app)  # the web console at / and its /api/console routes
    # Added last = outermost: the guard sees everything, then metrics, the edges (Host header,
    # cross-site requests), then the size limit.
    app.add_middleware(BodyLimitMiddleware, limit=settings.api.max_request_bytes)
    app.add_middleware(EdgeMiddleware, hosts=allowed_hosts(settings.api.allowed_hosts, settings.api.host))
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(GuardMiddleware, failure=lambda: state.failure)
    return app


def _lifespan(state: ApiState, owns_manager: bool) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await anyio.to_thread.run_sync(_start, state, owns_manager)
        except Exception as exc:  # reported once, as one line, by the guard middleware (no traceback)
            state.failure = f"start-up failed: {type(exc).__name__}: {redact.scrub(str(exc))}"
            raise
        pool = state.settings.store.pool_max_size
        # Sync routes never hold more threads than the pool has connections for.
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(4, pool)
        state.turns = TurnStreams(state.engine, state.lifecycle, max_turns=max(1, pool - 2),
                                 wait_s=state.settings.store.lock_timeout_s)
        expiry = asyncio.create_task(cleanup.periodic(state.manager, state.settings.api), name="isotope-expiry")
        state.lifecycle.ready = True
        log.info("Isotope API ready: store=%s restored=%d sessions", state.manager.backend,
                 state.restored.get("restored_count", 0))
        try:
            yield
        finally:
            state.lifecycle.begin_shutdown()
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
            stuck = await _drain(state)
            if owns_manager and not stuck:
                await anyio.to_thread.run_sync(state.manager.close)
            log.info("Isotope API stopped")

    return lifespan


def _start(state: ApiState, owns_manager: bool) -> None:
    """The guide's restart workflow: connection check, restore into memory."""
    if owns_manager:
        state.manager.open()
    check = state.manager.test_connection()
    if check.get("ok"):
        log.info("store check: %s ok (%s ms)", state.manager.backend, check.get("latency_ms"))
    else:
        log.warning("store check failed: %s; serving from the fallback store",
                    redact.scrub(str(check.get("error", "unreachable"))))
    state.restore("startup")


async def _drain(state: ApiState) -> int:
    """Wait for running turns until the grace period (plus the reporting margin) is over; return
    how many are still running. Those are stuck in a model call (an abandoned turn waits for it to
    return) and save nothing; the store is left open for them and the process exit ends them."""
    turns = state.turns
    if turns is None or not turns.running():
        return 0
    wait = max(0.0, (state.lifecycle.report_deadline() or 0.0) - time.monotonic())
    log.warning("shutdown: waiting up to %.1f s for %d running turns", wait, turns.running())
    left = await anyio.to_thread.run_sync(turns.wait_idle, wait)
    if left:
        log.warning("shutdown: %d abandoned turns are still waiting for their model call; "
                    "nothing of them is saved", left)
    return left
