"""The optional bearer token (``api.token`` or ``ISOTOPE_API_TOKEN``) every ``/api`` route requires."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="Required when api.token / ISOTOPE_API_TOKEN is set")


def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)  # noqa: B008
) -> None:
    """FastAPI dependency: passes when no token is configured or the request carries it."""
    token = request.app.state.isotope.settings.api.token
    if token is None:
        return
    if credentials is None:
        raise Unauthorized("this API requires a bearer token: send 'Authorization: Bearer <api.token>'")
    if not hmac.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode()):
        raise Unauthorized("the bearer token is not valid; use the value of api.token / ISOTOPE_API_TOKEN")
