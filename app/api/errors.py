"""The one place where errors become HTTP responses.

Every error body is ``{"error": {"code": "...", "message": "..."}}`` (plus ``"field"`` for a
rejected input). The status is looked up by exception class along the MRO, the way starlette finds
its handlers, so a subclass inherits its parent's status unless it has its own row:

=========================  ======  ==========================  ====================================
exception                  status  code                        note
=========================  ======  ==========================  ====================================
ForeignHost                400     ``invalid_host``            Host not in ``api.allowed_hosts``
Unauthorized               401     ``unauthorized``            ``WWW-Authenticate: Bearer``
CrossSiteRequest           403     ``cross_site_request``      a state change from another origin
SessionNotFound            404     ``session_not_found``
SessionBusy                409     ``session_busy``            ``Retry-After``
StaleSession               409     ``stale_session``
SessionExists              409     ``session_exists``
RequestTooLarge            413     ``request_too_large``
UnsupportedMediaType       415     ``unsupported_media_type``  a state change whose body is not JSON
LimitExceeded              422     ``limit_exceeded``          names the field
InvalidInput               422     ``invalid_input``           names the field (also request validation)
EngineError                502     ``engine_error``            the model or a tool failed; nothing saved
StoreUnavailable           503     ``store_unavailable``       ``Retry-After``
StoreNotOpen               503     ``not_ready``
ServiceUnavailable         503     ``shutting_down`` ...       ``Retry-After``
IsotopeError, other        500     ``internal_error``          message withheld: see the server log
=========================  ======  ==========================  ====================================

Messages of the classes above are written as instructions and are shown; a 500 never shows the
exception's text (it might quote SQL or a driver message) and the log line has no traceback
unless ``log_level`` is DEBUG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.responses import JSONBody
from app.errors import (
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

log = logging.getLogger("isotope.api")


class ApiError(IsotopeError):
    """An error that only exists at the HTTP boundary."""

    code = "api_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class Unauthorized(ApiError):
    """The request lacks the configured bearer token."""

    code = "unauthorized"


class RequestTooLarge(ApiError):
    """The request body is over ``api.max_request_bytes``."""

    code = "request_too_large"


class ForeignHost(ApiError):
    """The Host header names a host this server does not answer to (DNS rebinding)."""

    code = "invalid_host"


class CrossSiteRequest(ApiError):
    """A state-changing request sent by a page of another origin."""

    code = "cross_site_request"


class UnsupportedMediaType(ApiError):
    """A state-changing request whose body is not JSON (an HTML form can send no other kind)."""

    code = "unsupported_media_type"


class ServiceUnavailable(ApiError):
    """The server cannot take this request now (starting, shutting down, too many turns)."""

    code = "unavailable"


@dataclass(frozen=True)
class Mapping:
    status: int
    code: str
    retry_after: int | None = None


STATUS_BY_CLASS: dict[type[BaseException], Mapping] = {
    ForeignHost: Mapping(400, "invalid_host"),
    Unauthorized: Mapping(401, "unauthorized"),
    CrossSiteRequest: Mapping(403, "cross_site_request"),
    SessionNotFound: Mapping(404, "session_not_found"),
    SessionBusy: Mapping(409, "session_busy", retry_after=1),
    StaleSession: Mapping(409, "stale_session"),
    SessionExists: Mapping(409, "session_exists"),
    RequestTooLarge: Mapping(413, "request_too_large"),
    UnsupportedMediaType: Mapping(415, "unsupported_media_type"),
    LimitExceeded: Mapping(422, "limit_exceeded"),
    InvalidInput: Mapping(422, "invalid_input"),
    EngineError: Mapping(502, "engine_error"),
    StoreUnavailable: Mapping(503, "store_unavailable", retry_after=1),
    StoreNotOpen: Mapping(503, "not_ready", retry_after=1),
    ServiceUnavailable: Mapping(503, "unavailable", retry_after=1),
}
INTERNAL = Mapping(500, "internal_error")
INTERNAL_MESSAGE = "internal error; the server log has the details"


def mapping_for(exc: BaseException) -> Mapping:
    """The row of :data:`STATUS_BY_CLASS` for ``exc``'s nearest class."""
    for cls in type(exc).__mro__:
        found = STATUS_BY_CLASS.get(cls)
        if found is not None:
            return found
    return INTERNAL


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


def describe(exc: BaseException) -> tuple[Mapping, dict[str, Any]]:
    """Status row and JSON body for a domain error (also used for SSE ``error`` events)."""
    mapping = mapping_for(exc)
    if mapping is INTERNAL:
        log.error("unexpected %s: %s", type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return mapping, error_body(mapping.code, INTERNAL_MESSAGE)
    code = getattr(exc, "code", None) if isinstance(exc, ApiError) else mapping.code
    field = exc.field if isinstance(exc, InvalidInput) else None
    return mapping, error_body(code or mapping.code, str(exc), field)


def error_response(exc: BaseException) -> JSONBody:
    mapping, body = describe(exc)
    headers = {"Retry-After": str(mapping.retry_after)} if mapping.retry_after else {}
    if mapping.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONBody(body, status_code=mapping.status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONBody:
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(part) for part in first.get("loc", ()))
    # The input itself is never echoed: it may be huge, binary or a secret.
    message = f"{field or 'request'}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problems)"
    return JSONBody(error_body("invalid_input", message, field or None), status_code=422)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 413: "request_too_large", 415: "unsupported_media_type"}


async def _http_error(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}; see /docs for the API"
    return JSONBody(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app`` (anything else is caught by the guard middleware)."""
    app.add_exception_handler(IsotopeError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
