"""The PostgreSQL session store: :class:`PostgresStore`, put together from its parts.

=================  ===========================================================================
``connections``    the pool, translated driver errors, retries on a dead connection
``deadlines``      the process-wide watchdog that gives every operation a client-side deadline
``session_lock``   the per-session turn lock (the only module that knows what it is)
``writes``         save (one statement on the hot path), create, delete, expiry
``reads``          load, info, listings, counts, statistics, ping
``spool_merge``    replaying the outage spool's records, exactly once, merged
``sql``            every statement, as typed constants
=================  ===========================================================================

Only this package (and the schema module) import psycopg.
"""

from __future__ import annotations

import builtins
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from app.config import StoreConfig
from app.store.base import SaveResult, SessionInfo, StoredSession, StoreStatus
from app.store.delta import CacheEntry, Limits, SessionCache
from app.store.embedded import EmbeddedPostgres
from app.store.outage.record import DeleteRecord, SaveRecord
from app.store.postgres.connections import Connections
from app.store.postgres.reads import Reads
from app.store.postgres.session_lock import SessionLocks
from app.store.postgres.spool_merge import SpoolMerge
from app.store.postgres.writes import Writes


class PostgresStore:
    """Sessions in PostgreSQL. Construct, then :meth:`open` (the caller owns the pool)."""

    name = "postgres"

    def __init__(self, conninfo: str | None, config: StoreConfig, data_dir: Path | None = None,
                 embedded_cleanup: str | None = "stop") -> None:
        self.config = config
        self.connections = Connections(conninfo, config, data_dir, embedded_cleanup)
        self.locks = SessionLocks(self.connections, config)
        self._cache = SessionCache(config.cache_sessions, config.cache_messages)
        self.limits = Limits(config.max_message_bytes, config.max_session_bytes, config.inline_member_bytes)
        self._writes = Writes(self.name, self.connections, self.locks, self._cache, self.limits)
        self._reads = Reads(self.name, self.connections, self.locks, self._cache)
        self._merge = SpoolMerge(self.connections, self.locks, self._cache)

    # ------------------------------------------------------------------ lifecycle

    @property
    def embedded(self) -> EmbeddedPostgres | None:
        return self.connections.embedded

    @property
    def conninfo(self) -> str | None:
        return self.connections.conninfo

    def open(self) -> None:
        self.connections.open()

    def close(self) -> None:
        self.connections.close()
        self._cache.clear()

    def migrate(self) -> list[int]:
        """Apply missing migrations now; return the versions applied."""
        return self.connections.migrate()

    def reset_pool(self) -> None:
        self.connections.reset_pool()

    def probe(self) -> bool:
        """Can a brand-new connection reach the server? (Bypasses the pool and its back-off.)"""
        return self.connections.probe()

    @property
    def fallback_active(self) -> bool:
        return False

    def status(self) -> StoreStatus:
        return StoreStatus(backend=self.name, fallback_active=False, down_since=None, reason=None,
                           spool_depth=0, last_replay=None)

    # ------------------------------------------------------------------ the SessionStore protocol

    def save(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
             expires_in_hours: float | None) -> SaveResult:
        return self._writes.save(session_id, data, metadata, expires_in_hours)

    def create(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
               expires_in_hours: float | None) -> SaveResult:
        return self._writes.create(session_id, data, metadata, expires_in_hours)

    def delete(self, session_id: str, soft: bool) -> bool:
        return self._writes.delete(session_id, soft)

    def cleanup_expired(self, hard: bool, inactive_for_hours: float | None = None) -> int:
        return self._writes.cleanup_expired(hard, inactive_for_hours)

    def load(self, session_id: str) -> StoredSession | None:
        return self._reads.load(session_id)

    def info(self, session_id: str, include_inactive: bool = False) -> SessionInfo | None:
        return self._reads.info(session_id, include_inactive)

    def list(self, limit: int, offset: int, include_inactive: bool) -> builtins.list[SessionInfo]:
        return self._reads.list(limit, offset, include_inactive)

    def count(self, include_inactive: bool) -> int:
        return self._reads.count(include_inactive)

    def active_ids(self) -> builtins.list[str]:
        return self._reads.active_ids()

    def statistics(self) -> dict[str, Any]:
        return self._reads.statistics()

    def ping(self) -> dict[str, Any]:
        return self._reads.ping()

    def lock(self, session_id: str, timeout: float | None = None) -> AbstractContextManager[None]:
        """Hold the session's turn lock; saves inside reuse its connection."""
        return self.locks.hold(session_id, timeout)

    # ------------------------------------------------------------------ for the outage store

    def apply_spooled_batch(self, records: builtins.list[SaveRecord | DeleteRecord],
                            produced: dict[str, int]) -> builtins.list[int]:
        """Apply spooled writes in one transaction (see :mod:`app.store.postgres.spool_merge`)."""
        return self._merge.apply_batch(records, produced)

    def forget(self, session_id: str) -> None:
        """Drop what this process remembers of a session (its next save takes the locked path)."""
        self._cache.drop(session_id)

    def cache_entry(self, session_id: str) -> CacheEntry | None:
        """What this process knows PostgreSQL holds for the session (the spool writer's base)."""
        return self._cache.get(session_id)


__all__ = ["PostgresStore"]
