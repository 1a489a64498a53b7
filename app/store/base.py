"""The persistence seam: what every session store offers, the records it returns, and the
validation every entry point (manager, API, CLI) shares.

Three implementations of :class:`SessionStore`: :class:`~app.store.postgres.PostgresStore`,
:class:`~app.store.files.FileSessionStore` (the backend when ``postgres_sessions`` is false), and
:class:`~app.store.outage.store.OutageStore`, which puts PostgreSQL first and keeps a file copy and an
outage spool while it is unreachable. :class:`~app.core.postgres_session_manager.SessionManager`
validates arguments and delegates to one of them; callers use the manager.
"""

from __future__ import annotations

import builtins
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypedDict

from app.errors import InvalidInput

MAX_SESSION_ID_LENGTH = 255
MAX_EXPIRES_IN_HOURS = 1_000_000.0  # about 114 years; past that timestamps overflow soon enough


class SessionInfo(TypedDict):
    """One row of ``list_sessions()``: everything about a session except its data."""

    session_id: str
    metadata: dict[str, Any]
    created_at: datetime
    last_updated: datetime
    expires_at: datetime | None
    version: int
    is_active: bool
    message_count: int


@dataclass(frozen=True)
class SaveResult:
    """What a save did. Truthy, so ``if manager.save(...)`` reads naturally."""

    session_id: str
    version: int
    message_count: int
    backend: str
    skipped: list[str] = field(default_factory=list)
    appended: int = 0
    rewritten: bool = False

    def __bool__(self) -> bool:
        return True


@dataclass
class StoredSession:
    """A loaded session: its data as saved plus the row's bookkeeping."""

    session_id: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    last_updated: datetime
    expires_at: datetime | None
    is_active: bool
    message_count: int
    backend: str

    def info(self) -> SessionInfo:
        return SessionInfo(
            session_id=self.session_id, metadata=self.metadata, created_at=self.created_at,
            last_updated=self.last_updated, expires_at=self.expires_at, version=self.version,
            is_active=self.is_active, message_count=self.message_count,
        )


class StoreStatus(TypedDict):
    """A store's health for /ready, doctor and metrics."""

    backend: str
    fallback_active: bool  # PostgreSQL is unreachable: the file copy and the spool serve
    down_since: float | None  # time.time() when it stopped answering
    reason: str | None
    spool_depth: int  # writes waiting for PostgreSQL
    last_replay: dict[str, Any] | None


class SessionStore(Protocol):
    """What the manager needs from a backend. Arguments arrive already validated."""

    name: str

    @property
    def fallback_active(self) -> bool:
        """True while the store serves from its fallback (PostgreSQL unreachable)."""
        ...

    def open(self) -> None: ...

    def close(self) -> None: ...

    def save(
        self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
        expires_in_hours: float | None,
    ) -> SaveResult: ...

    def create(
        self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
        expires_in_hours: float | None,
    ) -> SaveResult:
        """Store a new session; SessionExists when the id is taken (even by a deleted one)."""
        ...

    def load(self, session_id: str) -> StoredSession | None: ...

    def info(self, session_id: str, include_inactive: bool = False) -> SessionInfo | None: ...

    def list(self, limit: int, offset: int, include_inactive: bool) -> builtins.list[SessionInfo]: ...

    def count(self, include_inactive: bool) -> int: ...

    def delete(self, session_id: str, soft: bool) -> bool: ...

    def statistics(self) -> dict[str, Any]: ...

    def cleanup_expired(self, hard: bool, inactive_for_hours: float | None = None) -> int: ...

    def active_ids(self) -> builtins.list[str]: ...

    def ping(self) -> dict[str, Any]: ...

    def lock(self, session_id: str, timeout: float | None = None) -> AbstractContextManager[None]: ...

    def status(self) -> StoreStatus: ...


# ---------------------------------------------------------------------------------------------
# Validation shared by every entry point (manager, API, CLI)


# Internal lock names (the expiry job's...) start with NUL, which check_session_id refuses in a
# session id: no client can create a session that shares a lock with an internal job.
INTERNAL_LOCK_PREFIX = "\x00isotope:"


def internal_lock_id(name: str) -> str:
    """The lock id of an internal job ``name``: never equal to any session id."""
    return INTERNAL_LOCK_PREFIX + name


def is_internal_lock_id(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(INTERNAL_LOCK_PREFIX)


def check_session_id(session_id: Any, field_name: str = "session_id") -> str:
    if not isinstance(session_id, str):
        raise InvalidInput(field_name, f"must be a string, not {type(session_id).__name__}")
    if not session_id:
        raise InvalidInput(field_name, "must not be empty")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise InvalidInput(
            field_name, f"is {len(session_id)} characters long; the limit is {MAX_SESSION_ID_LENGTH}"
        )
    if "\x00" in session_id:
        raise InvalidInput(field_name, "must not contain the NUL character")
    if not session_id.isascii():
        try:
            session_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(field_name, "must be valid Unicode (it holds a lone surrogate)") from None
    return session_id


_GOOD_KEYS: set[str] = set()  # top-level keys already accepted: every save repeats the same few


def check_session_data(session_data: Any) -> dict[str, Any]:
    if not isinstance(session_data, dict):
        raise InvalidInput("session_data", f"must be a dict, not {type(session_data).__name__}")
    for key in session_data:
        if key in _GOOD_KEYS and type(key) is str:
            continue
        if not isinstance(key, str):
            raise InvalidInput("session_data", f"top-level keys must be strings; got {key!r}")
        if not key or "\x00" in key or key.startswith("$"):
            raise InvalidInput("session_data", f"top-level key {key!r} is not allowed (empty, NUL or '$')")
        check_session_id(key, f"session_data key {key[:40]!r}")
        if len(_GOOD_KEYS) < 10_000:
            _GOOD_KEYS.add(key)
    return session_data


def check_metadata(metadata: Any) -> dict[str, Any] | None:
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInput("metadata", f"must be a dict or None, not {type(metadata).__name__}")
    return metadata


def check_expires_in_hours(hours: Any) -> float | None:
    if hours is None:
        return None
    if isinstance(hours, bool) or not isinstance(hours, int | float):
        raise InvalidInput("expires_in_hours", f"must be a number of hours, not {type(hours).__name__}")
    try:
        value = float(hours)
    except OverflowError:  # an int too large for a float
        raise InvalidInput("expires_in_hours", f"must be at most {MAX_EXPIRES_IN_HOURS:.0f}") from None
    if not math.isfinite(value):
        raise InvalidInput("expires_in_hours", "must be a finite number")
    if value < 0:
        raise InvalidInput("expires_in_hours", f"must not be negative (got {hours})")
    if value > MAX_EXPIRES_IN_HOURS:
        raise InvalidInput("expires_in_hours", f"must be at most {MAX_EXPIRES_IN_HOURS:.0f}")
    return value


def check_paging(limit: Any, offset: Any) -> tuple[int, int]:
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(name, f"must be an integer, not {type(value).__name__}")
    if not 0 <= limit <= 10_000:
        raise InvalidInput("limit", f"must be between 0 and 10000 (got {limit})")
    if not 0 <= offset <= 2**31 - 1:
        raise InvalidInput("offset", f"must be between 0 and {2**31 - 1} (got {offset})")
    return limit, offset

