"""``isotope serve``: the HTTP API (see :mod:`app.api`) under uvicorn.

::

    isotope serve                          # api.host / api.port from the configuration (127.0.0.1:8000)
    ISOTOPE_API_TOKEN=... isotope serve --host 0.0.0.0 --port 8080   # a public bind needs api.token

A non-loopback bind without ``api.token`` is refused (exit 2) unless ``--allow-unauthenticated``
is given, which is logged as a warning at every start.

SIGTERM or Ctrl+C: the server stops accepting connections, running turns get
``api.shutdown_grace_s`` to finish (then they are abandoned, saving nothing), the store is closed
and the process exits with status 0 (130 after Ctrl+C), about ``shutdown_grace_s + 2`` seconds at
most after the signal.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

import typer
import uvicorn

from app.api import create_app, redact
from app.api.context import REPORT_MARGIN_S, Lifecycle
from app.api.edges import is_loopback
from app.config import load_settings


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app the moment a stop signal arrives (so turns and ``/ready``
    react while uvicorn waits for open connections, not after)."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.lifecycle.begin_shutdown()
        super().handle_exit(sig, frame)


def _graceful_exit(sig: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the stop signal once it has shut down; after a clean shutdown, exit 0."""


def serve(
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default: api.host)."),
    port: int | None = typer.Option(None, "--port", help="Port (default: api.port, 8000)."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (uvicorn's access log)."),
    allow_unauthenticated: bool = typer.Option(
        False, "--allow-unauthenticated",
        help="Serve a non-loopback address without api.token: anyone who reaches it controls every session."),
) -> None:
    """Serve the HTTP API: the guide's endpoints, the chat API, /health, /ready, /metrics."""
    settings = load_settings()
    redact.install_log_filter()
    logging.getLogger("uvicorn.error").setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))
    settings.api.host = host or settings.api.host  # the app's Host check follows the real bind
    _check_exposure(settings.api.host, settings.api.token is not None, allow_unauthenticated)
    app = create_app(settings)
    grace = settings.api.shutdown_grace_s
    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port if port is None else port,
        log_config=None,
        access_log=access_log,
        lifespan="on",
        server_header=False,
        # uvicorn's own limit is a backstop: turns report how they ended within grace + margin.
        timeout_graceful_shutdown=int(grace + REPORT_MARGIN_S + 1),
    )
    state = app.state.isotope
    server = _Server(config, state.lifecycle)
    previous = signal.signal(signal.SIGTERM, _graceful_exit)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise typer.Exit(1)
    if state.turns is not None and state.turns.running():
        # Abandoned turns whose model call is still in flight: their threads (and LangGraph's
        # executor threads, which the interpreter would join) end only when that call returns.
        # Nothing of those turns is saved, so exit now rather than after the model.
        logging.getLogger("isotope.api").warning(
            "exiting with %d abandoned turns still in a model call", state.turns.running())
        logging.shutdown()
        os._exit(0)


def _check_exposure(host: str, has_token: bool, allowed: bool) -> None:
    """Refuse to serve a non-loopback address without authentication, unless told so explicitly."""
    if has_token or is_loopback(host):
        return
    if not allowed:
        typer.echo(f"isotope serve: refusing to listen on {host} without authentication: anyone who can reach it "
                   f"could read and delete every session. Set api.token (or ISOTOPE_API_TOKEN), bind to "
                   f"127.0.0.1, or pass --allow-unauthenticated to accept that.", err=True)
        raise typer.Exit(2)
    logging.getLogger("isotope.api").warning(
        "SERVING WITHOUT AUTHENTICATION on %s (--allow-unauthenticated): anyone who can reach this port can "
        "read, change and delete every session", host)
