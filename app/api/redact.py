"""Keeps configured secrets (the database password, the API token) out of responses and log lines.

Isotope's own messages never carry them; this is the second line of defence for text that comes
from elsewhere (a driver's error message, a model provider's error, a third-party log line).
"""

from __future__ import annotations

import logging
import threading

from app.config import Settings, conninfo_password

MASK = "***"
_secrets: set[str] = set()
_lock = threading.Lock()


def register_settings(settings: Settings) -> None:
    """Remember the secrets ``settings`` holds: database password, API token."""
    found: list[str] = []
    if settings.api.token is not None:
        found.append(settings.api.token.get_secret_value())
    if settings.postgresql.password is not None:
        found.append(settings.postgresql.password.get_secret_value())
    password = conninfo_password(settings.conninfo())
    if password:
        found.append(password)
    with _lock:
        # Very short secrets would mask ordinary words; they are weak anyway.
        _secrets.update(s for s in found if len(s) >= 4)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter: formats the record's message once and scrubs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            clean = scrub(message)
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
