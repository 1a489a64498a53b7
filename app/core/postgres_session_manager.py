"""The session manager of the guide: ``get_postgres_session_manager()`` and its methods.

:class:`SessionManager` validates every argument (an :class:`~app.errors.InvalidInput` names the
field and nothing is written), gives results the guide's shapes, and delegates to its store
(``manager.store``, a :class:`~app.store.base.SessionStore`):

* :class:`~app.store.outage.store.OutageStore` when ``postgres_sessions`` is on: PostgreSQL,
  with a file copy and a durable outage spool while it is unreachable, replayed when it is back.
* :class:`~app.store.files.FileSessionStore` when ``postgres_sessions`` is off.

``get_postgres_session_manager()`` returns one shared manager per process, opened on first use
as the guide's snippets expect. A manager you construct yourself does no I/O until
:meth:`SessionManager.open` (or ``with manager:``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app import metrics
from app.config import Settings, load_settings
from app.errors import InvalidInput, IsotopeError, StoreNotOpen, StoreUnavailable
from app.store import codec
from app.store.base import (
    SaveResult,
    SessionInfo,
    SessionStore,
    StoredSession,
    StoreStatus,
    check_expires_in_hours,
    check_metadata,
    check_paging,
    check_session_data,
    check_session_id,
    is_internal_lock_id,
)
from app.store.files import FileSessionStore
from app.store.outage.spool import Spool
from app.store.outage.store import OutageStore
from app.store.postgres import PostgresStore

log = logging.getLogger("isotope.manager")

__all__ = ["InvalidInput", "SessionManager", "get_postgres_session_manager", "get_session_manager"]


class SessionManager:
    """Session persistence with PostgreSQL first and local files as the safety net."""

    def __init__(self, settings: Settings | None = None, *, use_postgres: bool | None = None,
                 auto_open: bool = False, embedded_cleanup: str | None = "stop") -> None:
        self.settings = settings if settings is not None else load_settings()
        cfg = self.settings.store
        self.use_postgres = self.settings.postgres_sessions if use_postgres is None else use_postgres
        # The stores underneath, for doctor, migrate and the console; callers use the manager.
        self.files = FileSessionStore(self.settings.data_dir, cfg)
        self.pg: PostgresStore | None = None
        self.store: SessionStore = self.files
        self.spool: Spool | None = None
        if self.use_postgres:
            self.pg = PostgresStore(self.settings.conninfo(), cfg, self.settings.data_dir, embedded_cleanup)
            outage = OutageStore(self.pg, self.files, self.settings.data_dir, cfg)
            self.store, self.spool = outage, outage.spool
        self._auto_open = auto_open
        self._opened = False
        self._open_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def backend(self) -> str:
        return self.store.name

    @property
    def fallback_active(self) -> bool:
        return self.store.fallback_active

    def open(self) -> SessionManager:
        with self._open_lock:
            if not self._opened:
                self.store.open()
                self._opened = True
                log.info("session manager open: backend=%s data_dir=%s", self.backend, self.settings.data_dir)
            return self

    def close(self) -> None:
        with self._open_lock:
            if self._opened:
                self.store.close()
                self._opened = False

    def __enter__(self) -> SessionManager:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ready(self) -> SessionStore:
        if not self._opened:
            if not self._auto_open:
                raise StoreNotOpen("this SessionManager is not open; call open() or use it in a with block")
            self.open()
        return self.store

    # ------------------------------------------------------------------ the guide's API

    def save_session(self, session_id: str, session_data: dict[str, Any], metadata: dict[str, Any] | None = None,
                     expires_in_hours: float | None = None) -> bool:
        """Save the whole session state. True once durable; InvalidInput for bad arguments."""
        try:
            self.save(session_id, session_data, metadata, expires_in_hours)
        except StoreUnavailable as exc:
            log.error("session %r was not saved: %s", session_id, exc)
            return False
        return True

    def load_session(self, session_id: str) -> dict[str, Any] | None:
        """The saved state, or None for unknown, deleted and expired sessions."""
        stored = self.load(session_id)
        return stored.data if stored is not None else None

    def list_sessions(self, limit: int = 50, offset: int = 0, include_inactive: bool = False) -> list[SessionInfo]:
        limit, offset = check_paging(limit, offset)
        return self._ready().list(limit, offset, bool(include_inactive))

    def count_sessions(self, include_inactive: bool = False) -> int:
        return self._ready().count(bool(include_inactive))

    def delete_session(self, session_id: str, soft_delete: bool = True) -> bool:
        """Soft delete (deactivate) or hard delete. False for an unknown id."""
        check_session_id(session_id)
        return self._ready().delete(session_id, bool(soft_delete))

    def get_session_statistics(self) -> dict[str, Any]:
        stats = self._ready().statistics()
        status = self.store.status()
        stats["fallback_active"] = status["fallback_active"]
        stats["spool_depth"] = status["spool_depth"]
        metrics.SESSIONS_ACTIVE.set(stats["active_sessions"])
        return stats

    def cleanup_expired_sessions(self, hard_delete: bool = False, inactive_for_hours: float | None = None) -> int:
        """Deactivate (or, with hard_delete, remove) expired sessions; return how many."""
        if inactive_for_hours is not None:
            inactive_for_hours = check_expires_in_hours(inactive_for_hours)
        count = self._ready().cleanup_expired(bool(hard_delete), inactive_for_hours)
        if count:
            log.info("cleanup %s %d expired sessions", "removed" if hard_delete else "deactivated", count)
        return count

    def restore_all_sessions(self, limit: int | None = None, include_data: bool = False) -> dict[str, Any]:
        """Load every active session (newest first, at most ``limit``); report what failed."""
        started = time.perf_counter()
        ids = self._ready().active_ids()
        if limit is not None:
            ids = ids[:limit]
        restored: dict[str, dict[str, Any]] = {}
        errors: list[dict[str, str]] = []
        for session_id in ids:
            try:
                stored = self.load(session_id)
            except (codec.CodecError, IsotopeError) as exc:
                errors.append({"session_id": session_id, "error": str(exc)})
                log.warning("session %r could not be restored: %s", session_id, exc)
                continue
            if stored is not None:
                restored[session_id] = stored.data
        result: dict[str, Any] = {
            "restored_count": len(restored),
            "failed_count": len(errors),
            "failed_session_ids": [e["session_id"] for e in errors],
            "errors": errors,
            "duration_s": round(time.perf_counter() - started, 4),
            "backend": self.backend if not self.fallback_active else "files",
        }
        if include_data:
            result["sessions"] = restored
        return result

    def test_connection(self) -> dict[str, Any]:
        """Can the store be reached? ``ok``, database, host, port, server_version, latency_ms, error."""
        return self._ready().ping()

    def fork_session(self, session_id: str, new_session_id: str | None = None, at_message: int | None = None,
                     metadata: dict[str, Any] | None = None) -> str:
        """Copy a session (or its first ``at_message`` messages) to a new, independent one; return
        its id. In PostgreSQL one statement on the server: see :func:`app.core.transfer.fork_session`."""
        from app.core.transfer import fork_session  # app.core.transfer builds on this module

        return fork_session(self, session_id, new_session_id, at_message, metadata)

    # ------------------------------------------------------------------ richer API (engine, API, CLI)

    def save(self, session_id: str, session_data: dict[str, Any], metadata: dict[str, Any] | None = None,
             expires_in_hours: float | None = None) -> SaveResult:
        """Like save_session, but returns what happened (version, backend, skipped paths)."""
        check_session_id(session_id)
        check_session_data(session_data)
        check_metadata(metadata)
        hours = check_expires_in_hours(expires_in_hours)
        store = self._ready()
        started = time.perf_counter()
        try:
            result = store.save(session_id, session_data, metadata, hours)
        except RecursionError:
            # Encoding, snapshots and comparisons recurse per nesting level; a value nested
            # hundreds of levels deep exhausts Python's stack before anything is written.
            field = "metadata" if metadata is not None and _depth(metadata) > _depth(session_data) else "session_data"
            raise InvalidInput(field, "nests lists or dicts too deeply to be stored (hundreds of levels); "
                                      "flatten the structure") from None
        metrics.observe_save(result.backend, time.perf_counter() - started)
        if result.skipped:
            log.warning("session %r: skipped values that cannot be stored: %s", session_id,
                        ", ".join(result.skipped[:20]) + (" ..." if len(result.skipped) > 20 else ""))
        return result

    def create(self, session_id: str, session_data: dict[str, Any], metadata: dict[str, Any] | None = None,
               expires_in_hours: float | None = None) -> SaveResult:
        """Store a new session (version 1). SessionExists when the id is taken, even by a
        deleted session: the store's uniqueness constraint decides, not a prior lookup."""
        check_session_id(session_id)
        check_session_data(session_data)
        check_metadata(metadata)
        hours = check_expires_in_hours(expires_in_hours)
        return self._ready().create(session_id, session_data, metadata, hours)

    def load(self, session_id: str) -> StoredSession | None:
        """The stored session with its bookkeeping (version, timestamps), or None."""
        check_session_id(session_id)
        return self._ready().load(session_id)

    def session_info(self, session_id: str, include_inactive: bool = False) -> SessionInfo | None:
        check_session_id(session_id)
        return self._ready().info(session_id, bool(include_inactive))

    @contextmanager
    def lock(self, session_id: str, timeout: float | None = None) -> Iterator[None]:
        """Exclusive per-session lock across threads, processes and instances sharing the database
        (a file lock under the data dir while PostgreSQL is unreachable). ``session_id`` may also
        be an :func:`~app.store.base.internal_lock_id`."""
        if not is_internal_lock_id(session_id):
            check_session_id(session_id)
        with self._ready().lock(session_id, timeout):
            yield

    def status(self) -> StoreStatus:
        """Backend, fallback state and spool depth (for /ready, doctor and metrics)."""
        return self.store.status()


def _depth(value: Any) -> int:
    """How deeply lists, tuples, sets and dicts nest in ``value`` (iterative: it may be very deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


# ---------------------------------------------------------------------------------------------
# Process-wide managers

_shared: dict[bool, SessionManager] = {}
_shared_lock = threading.Lock()


def get_postgres_session_manager() -> SessionManager:
    """The process's PostgreSQL session manager (file store as fallback), opened on first use."""
    return _shared_manager(True)


def get_session_manager(settings: Settings | None = None) -> SessionManager:
    """The process's manager for the configured backend (``postgres_sessions``)."""
    use_postgres = (settings or load_settings()).postgres_sessions
    return _shared_manager(use_postgres, settings)


def _shared_manager(use_postgres: bool, settings: Settings | None = None) -> SessionManager:
    with _shared_lock:
        manager = _shared.get(use_postgres)
        if manager is None:
            manager = SessionManager(settings, use_postgres=use_postgres, auto_open=True)
            _shared[use_postgres] = manager
        return manager


@atexit.register
def _close_shared() -> None:
    for manager in list(_shared.values()):
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing useful to do with it
            manager.close()
    _shared.clear()


def reset_shared_managers() -> None:
    """Close and forget the process-wide managers (tests, or after changing configuration)."""
    with _shared_lock:
        _close_shared()
