"""The error mapping, in process: domain errors by class, and the last-resort 500 (no traceback)."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api import create_app
from app.api.errors import ServiceUnavailable, Unauthorized, mapping_for
from app.config import Settings
from app.errors import (
    ConfigError,
    EngineError,
    InvalidInput,
    IsotopeError,
    LimitExceeded,
    SessionBusy,
    SessionExists,
    SessionNotFound,
    StaleSession,
    StoreNotOpen,
    StoreUnavailable,
)


@pytest.mark.parametrize("exc, status, code", [
    (Unauthorized("x"), 401, "unauthorized"), (SessionNotFound("s"), 404, "session_not_found"),
    (SessionBusy("x"), 409, "session_busy"), (StaleSession("x"), 409, "stale_session"),
    (SessionExists("s"), 409, "session_exists"), (LimitExceeded("f", "x"), 422, "limit_exceeded"),
    (InvalidInput("f", "x"), 422, "invalid_input"), (EngineError("x"), 502, "engine_error"),
    (StoreUnavailable("x"), 503, "store_unavailable"), (StoreNotOpen("x"), 503, "not_ready"),
    (ServiceUnavailable("x"), 503, "unavailable"), (ConfigError("x"), 500, "internal_error"),
    (IsotopeError("x"), 500, "internal_error"), (RuntimeError("x"), 500, "internal_error"),
])
def test_status_by_class(exc: BaseException, status: int, code: str) -> None:
    assert (mapping_for(exc).status, mapping_for(exc).code) == (status, code)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)  # no I/O until the lifespan runs, and these routes need none

    def boom() -> None:
        raise RuntimeError("a bug")

    def store_failed() -> None:
        raise IsotopeError("PostgreSQL failed during load: syntax error at or near SELECT")

    def busy() -> None:
        raise SessionBusy("session 's' is busy in another turn (waited 30 s); retry")

    for path, route in (("/boom", boom), ("/store-failed", store_failed), ("/busy", busy)):
        app.add_api_route(path, route)
    return app


def test_unexpected_errors_are_a_bare_500(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="isotope")
    client = TestClient(app, base_url="http://localhost",  # a loopback name: the Host check passes
                        raise_server_exceptions=False)  # not entered: no lifespan, no store needed
    for path in ("/boom", "/store-failed"):
        response = client.get(path)
        assert response.status_code == 500
        assert response.json() == {"error": {"code": "internal_error",
                                             "message": "internal error; the server log has the details"}}
    busy = client.get("/busy")
    assert busy.status_code == 409 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["message"].startswith("session 's' is busy")
    records = [r for r in caplog.records if r.name.startswith("isotope")]
    assert len([r for r in records if r.levelno == logging.ERROR]) == 2
    assert not any(r.exc_info for r in records)  # one line each, no traceback
