"""Secrets out of every output: masked configuration values, connection strings, URLs and log lines.

Two defences, used by the CLI and the API alike:

* **By name**: a configuration key or connection option whose name looks secret (``password``,
  ``sslpassword``, ``token``, ``api_key``, ``secret``...) is shown as ``***``; so is the password
  of a URL (``postgresql://user:***@host``, ``https://user:***@proxy``).
* **By value**: the secrets the configuration holds are remembered (:func:`remember_settings`), and
  :func:`scrub` replaces them in any text that came from elsewhere (a driver's or a model
  provider's error message, a third-party log line). :class:`RedactingFilter` does it for logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from app.config import Settings

MASK = "***"
# Substrings of option names that hold secrets. "key" covers api_key and sslkey (a path, masked
# anyway: knowing where the key lives helps an attacker more than it helps a reader).
SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "key", "credential", "auth", "cookie")
# scheme://user:password@  (the user is kept: it helps diagnose, and is not a credential alone)
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@?#]*:)[^\s@/?#]*@")
# name=value pairs in query strings and conninfo text, for secret-looking names
_SECRET_PAIRS = re.compile(
    r"(?P<head>\b[\w.-]*(?:" + "|".join(SECRET_WORDS) + r")[\w.-]*\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s&'\"]+)",
    re.IGNORECASE)
# Very short secrets would mask ordinary words; they are weak anyway.
MIN_SECRET_LENGTH = 4

_secrets: set[str] = set()
_lock = threading.Lock()


def is_secret_key(name: str) -> bool:
    """True when a configuration key or connection option of this name holds a secret."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def mask_conninfo(conninfo: str) -> str:
    """A libpq URL or conninfo string with every secret-like option (password, sslpassword...) masked."""
    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        return "<unparsable connection string>"
    shown = {key: (MASK if is_secret_key(key) else str(value)) for key, value in params.items() if value is not None}
    return make_conninfo(**shown)


def mask_text(text: str) -> str:
    """``text`` with URL passwords and ``secret_name=value`` pairs masked (by shape, not by value)."""
    if "://" in text:
        text = _URL_CREDENTIALS.sub(lambda m: m.group("head") + MASK + "@", text)
    if "=" in text:
        text = _SECRET_PAIRS.sub(lambda m: m.group("head") + MASK, text)
    return text


def mask_value(key: str, value: Any) -> Any:
    """How a configuration value is shown: masked when its key is secret-like, URL passwords hidden."""
    if value is None or value == "":
        return value
    if is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    return value


def remember(*secrets: str | None) -> None:
    """Remember secret values so :func:`scrub` masks them wherever they appear."""
    with _lock:
        _secrets.update(s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH)


def remember_settings(settings: Settings) -> None:
    """Remember every secret ``settings`` holds: passwords, secret-like options, the API token, the
    model provider's key (read from the environment variable the configuration names)."""
    found: list[str | None] = []
    if settings.api.token is not None:
        found.append(settings.api.token.get_secret_value())
    pg = settings.postgresql
    if pg.password is not None:
        found.append(pg.password.get_secret_value())
    found.extend(value for key, value in pg.options.items() if is_secret_key(key))
    conninfo = settings.conninfo()
    if conninfo:
        with contextlib.suppress(Exception):
            found.extend(str(v) for k, v in conninfo_to_dict(conninfo).items() if is_secret_key(k) and v)
    found.append(os.environ.get(settings.engine.openai.api_key_env))
    remember(*found)


def scrub(text: str) -> str:
    """``text`` with every remembered secret, URL password and secret-looking pair replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return mask_text(text)


# Control characters in a log message (a session id a client chose, say) would forge log lines
# (a newline) or drive the terminal of whoever tails the log (escape sequences).
_LOG_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _visible(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


class RedactingFilter(logging.Filter):
    """A handler filter: formats the record's message once, scrubs it and escapes control characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = _LOG_CONTROLS.sub(_visible, scrub(message))
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


def install_log_filter() -> None:
    """Add the filter to every handler of the root logger (call after logging is configured)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
