"""Isotope's exception tree. Every error Isotope raises on purpose is one of these.

    IsotopeError
    ├── ConfigError            a configuration value is missing or malformed (names the key and the file)
    ├── InvalidInput           (also a ValueError) an argument was rejected; nothing was written
    │   ├── LimitExceeded      a session or message is over a configured size limit
    │   └── SessionExists      create() of an id that is taken (by an active or a deleted session)
    ├── SessionNotFound        (also a KeyError) no active session has this id
    ├── StaleSession           the stored session moved on since it was read (optimistic check failed)
    ├── SessionBusy            another turn holds the session's lock for longer than the timeout
    ├── StoreUnavailable       no store could take the request (PostgreSQL down and no fallback)
    │   └── StoreBusy          every pooled connection is in use (load, not an outage: no fallback)
    ├── StoreNotOpen           a store or manager was used before ``open()``
    ├── MigrationError         the schema could not be brought to the current version
    └── EngineError            a model or tool failed during a turn; the stored session is unchanged

Messages are instructions: what happened, which id or limit, what to do next. They never carry a
password or a message body.
"""

from __future__ import annotations


class IsotopeError(Exception):
    """Base class of every error Isotope raises on purpose."""


class ConfigError(IsotopeError):
    """A configuration value is missing or malformed."""


class InvalidInput(IsotopeError, ValueError):
    """An argument was rejected before anything was written.

    ``field`` names the offending argument (``session_id``, ``session_data.messages[3]``, ...).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class LimitExceeded(InvalidInput):
    """A session or message is larger than a configured limit."""


class SessionExists(InvalidInput):
    """A session with this id exists already (possibly deleted); pick another id or resume it."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__("session_id", f"session {session_id!r} already exists (or was deleted); "
                                        "resume it or pick another id")


class SessionNotFound(IsotopeError, KeyError):
    """No active session has this id (unknown, deleted or expired)."""

    def __init__(self, session_id: str, detail: str = "no active session with this id") -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id!r}: {detail}")

    def __str__(self) -> str:  # KeyError would quote the whole message again
        return str(self.args[0])


class StaleSession(IsotopeError):
    """The stored session changed since it was read; reload and retry."""


class SessionBusy(IsotopeError):
    """Another process or thread holds the session's lock for longer than the lock timeout."""


class StoreUnavailable(IsotopeError):
    """No store could take the request."""


class StoreBusy(StoreUnavailable):
    """Every connection of the pool is in use: the server is up but saturated. Retry shortly."""


class StoreNotOpen(IsotopeError):
    """A store or manager was used before it was opened."""


class MigrationError(IsotopeError):
    """The schema could not be brought to the current version."""


class EngineError(IsotopeError):
    """A model or tool failed during a turn."""
