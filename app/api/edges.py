"""The server's edges against browsers: Host header check and no cross-site state changes.

A browser is a client the server's user did not choose: any page it visits can send requests to
``localhost:8000``. Two attacks follow, and two checks stop them (pure ASGI, before any route):

* **DNS rebinding**: a page at ``evil.example`` rebinds its name to 127.0.0.1 and reads the API
  as a same-origin page. Its requests carry ``Host: evil.example``, so only hosts this server
  answers to are served (``api.allowed_hosts``; on a loopback bind the loopback names by default).
* **Cross-site requests**: a page may POST a form (or a ``fetch`` without CORS) to any URL; such a
  "simple request" is sent without a preflight. A request that may change state (any method but
  GET, HEAD, OPTIONS) is refused when it says it comes from another origin (``Origin``, else
  ``Sec-Fetch-Site``), and when its body is not JSON: an HTML form can only send
  ``application/x-www-form-urlencoded``, ``multipart/form-data`` or ``text/plain``, and a JSON
  body from another origin needs a preflight this server never grants.

The probes (``/health``, ``/ready``, ``/metrics``) skip the Host check: orchestrators address them
by IP, and they carry no session data.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import ApiError, CrossSiteRequest, ForeignHost, UnsupportedMediaType, error_response

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBES = frozenset({"/health", "/ready", "/metrics"})
JSON_TYPES = ("application/json",)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (``localhost``, 127.0.0.1, ::1)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def allowed_hosts(configured: Sequence[str] | None, bind_host: str) -> tuple[str, ...] | None:
    """The Host names to accept: the configured list, else the loopback names on a loopback
    bind, else None (any host: a public bind without a list)."""
    if configured is not None:
        return tuple(h.lower() for h in configured)
    return LOOPBACK_NAMES if is_loopback(bind_host) else None


def _host_name(value: str) -> str:
    """``Host`` header value without its port: ``[::1]:8000`` -> ``::1``, ``a.example:80`` -> ``a.example``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class EdgeMiddleware:
    """Host check (when ``hosts`` is not None) and refusal of cross-site state changes."""

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers", ())}
        problem = self._problem(scope, headers)
        if problem is not None:
            await error_response(problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope, headers: dict[bytes, str]) -> ApiError | None:
        host = headers.get(b"host", "")
        if self.hosts is not None and scope.get("path") not in PROBES:
            name = _host_name(host)
            if not _host_allowed(name, self.hosts):
                return ForeignHost(
                    f"this server does not answer to the host {name[:100]!r}; list it in api.allowed_hosts "
                    f"(now: {', '.join(self.hosts)})")
        if scope.get("method", "GET") in SAFE_METHODS:
            return None
        origin = headers.get(b"origin")
        if origin is not None:
            if origin == "null" or urlsplit(origin).netloc.lower() != host.strip().lower():
                return CrossSiteRequest(
                    f"a request from the page of another origin ({origin[:100]!r}) may not change anything here")
        elif headers.get(b"sec-fetch-site") in ("cross-site", "same-site"):
            return CrossSiteRequest("a request from the page of another site may not change anything here")
        content_type = headers.get(b"content-type")
        if content_type is not None and content_type.split(";", 1)[0].strip().lower() not in JSON_TYPES:
            return UnsupportedMediaType(
                f"requests that change state take a JSON body (Content-Type: application/json), "
                f"not {content_type.split(';', 1)[0].strip()[:100]!r}")
        return None
