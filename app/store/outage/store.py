"""PostgreSQL first, local files while it is unreachable: :class:`OutageStore`.

Every call goes to PostgreSQL (:class:`~app.store.postgres.PostgresStore`) while it answers
(every operation has a client-side deadline, so a stopped, reset or frozen server fails fast).
When it stops answering, the store *trips* (:mod:`.health`): saves go to the **outage spool**
(fsync'd on local disk before ``save`` returns, :mod:`.writer`) and to a **file-store copy** that
``load`` reads until PostgreSQL is back. Sessions this process used before the outage stay known
(their last version), so their turns go on. The :mod:`.replay` thread probes the server and
replays the spool in order, exactly once, each write under its session's lock in PostgreSQL so it
merges with other instances' turns; a call on a session with a backlog replays that session first.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from app import metrics
from app.config import StoreConfig
from app.errors import SessionExists, StoreUnavailable
from app.store.base import SaveResult, SessionInfo, SessionStore, StoredSession, StoreStatus
from app.store.files import FileSessionStore
from app.store.lru import BoundedLRU
from app.store.outage.health import Health
from app.store.outage.replay import Replayer
from app.store.outage.spool import Spool
from app.store.outage.writer import SpoolWriter
from app.store.postgres import PostgresStore

log = logging.getLogger("isotope.manager")
T = TypeVar("T")


class OutageStore:
    """A :class:`~app.store.base.SessionStore` over PostgreSQL, with files as the safety net."""

    name = "postgres"

    def __init__(self, pg: PostgresStore, files: FileSessionStore, data_dir: Path, config: StoreConfig) -> None:
        self.pg = pg
        self.files = files
        self.spool = Spool(data_dir)
        self.health = Health()
        # What PostgreSQL last said about each recently used session, so that during an outage a
        # session this process was working on is still known (and its version right) before it
        # has a local copy; without it the first turn after the server dies finds "no session".
        self.known: BoundedLRU[SessionInfo] = BoundedLRU(max(config.cache_sessions, 1))
        self.writer = SpoolWriter(pg, files, self.spool, self.known)
        self.replayer = Replayer(pg, self.spool, self.health, self.writer, config.spool_replay_interval_s,
                                 config.connect_timeout_s)
        self._outage_locks = threading.local()  # sessions this thread holds by file lock

    # ------------------------------------------------------------------ lifecycle

    @property
    def fallback_active(self) -> bool:
        return self.health.down

    def open(self) -> None:
        self.files.open()
        self.spool.open()
        try:
            self.pg.open()
        except StoreUnavailable as exc:
            self.health.trip(exc, "open")
        self.replayer.start()
        metrics.SPOOL_DEPTH.set(self.spool.depth())

    def close(self) -> None:
        self.replayer.stop()
        self.pg.close()

    def status(self) -> StoreStatus:
        depth = self.spool.depth()
        metrics.SPOOL_DEPTH.set(depth)
        return StoreStatus(backend=self.name, fallback_active=self.fallback_active,
                           down_since=self.health.down_since, reason=self.health.reason, spool_depth=depth,
                           last_replay=self.replayer.last_replay)

    # ------------------------------------------------------------------ writes

    def save(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
             expires_in_hours: float | None) -> SaveResult:
        uncertain = False
        # A turn that began during the outage holds only a file lock, which other instances do
        # not see: if PostgreSQL came back meanwhile, its save still goes to the spool, whose
        # replay takes the session's lock in PostgreSQL and merges with whatever they wrote.
        if not self.fallback_active and not self._outage_locked(session_id) and self.replayer.drain(session_id):
            try:
                result = self.pg.save(session_id, data, metadata, expires_in_hours)
            except StoreUnavailable as exc:
                self.health.trip(exc, "save")
                uncertain = True
            else:
                self._remember_save(session_id, result, metadata, expires_in_hours)
                return result
        return self.writer.save(session_id, data, metadata, expires_in_hours, uncertain)

    def create(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
               expires_in_hours: float | None) -> SaveResult:
        """During an outage the id can only be checked against this data dir; a clash found at
        replay is merged like any concurrent write."""
        if not self.fallback_active and self.replayer.drain(session_id):
            try:
                result = self.pg.create(session_id, data, metadata, expires_in_hours)
            except StoreUnavailable as exc:
                self.health.trip(exc, "create")
            else:
                self._remember_save(session_id, result, metadata, expires_in_hours)
                return result
        if self.files.info(session_id, include_inactive=True) is not None or self.writer.has_written(session_id):
            raise SessionExists(session_id)
        return self.writer.save(session_id, data, metadata, expires_in_hours, uncertain=True)

    def delete(self, session_id: str, soft: bool) -> bool:
        with self.writer.lock:
            pending = self.spool.has_pending(session_id)
            if not self.fallback_active and not pending:
                try:
                    self.known.put(session_id, None)
                    return self.pg.delete(session_id, soft)
                except StoreUnavailable as exc:
                    self.health.trip(exc, "delete")
            return self.writer.delete(session_id, soft)

    def cleanup_expired(self, hard: bool, inactive_for_hours: float | None = None) -> int:
        return self._read("cleanup", lambda store: store.cleanup_expired(hard, inactive_for_hours))

    def _remember_save(self, session_id: str, result: SaveResult, metadata: dict[str, Any] | None,
                       hours: float | None) -> None:
        """Note what PostgreSQL holds after a save (the row's timestamps are not returned; ours
        are close enough)."""
        before = self.known.get(session_id)
        now = datetime.now(UTC)
        self.known.put(session_id, SessionInfo(
            session_id=session_id,
            metadata=dict(metadata) if metadata is not None else before["metadata"] if before else {},
            created_at=before["created_at"] if before else now, last_updated=now,
            expires_at=now + timedelta(hours=hours) if hours is not None else before["expires_at"] if before else None,
            version=result.version, is_active=True, message_count=result.message_count,
        ))

    # ------------------------------------------------------------------ reads

    def load(self, session_id: str) -> StoredSession | None:
        started = time.perf_counter()
        if not self.fallback_active and self.replayer.drain(session_id):
            try:
                stored = self.pg.load(session_id)
                metrics.LOAD_SECONDS.labels("postgres").observe(time.perf_counter() - started)
            except StoreUnavailable as exc:
                self.health.trip(exc, "load")
            else:
                self.known.put(session_id, stored.info() if stored is not None else None)
                return stored
        stored = self.files.load(session_id)
        if stored is None and self.files.info(session_id, include_inactive=True) is None \
                and visible(self.known.get(session_id), False) is not None:
            raise StoreUnavailable(
                f"PostgreSQL is unreachable ({self.health.reason or 'outage'}) and session {session_id!r} has no "
                "local copy in this process yet; load it again when PostgreSQL answers"
            )
        return stored

    def info(self, session_id: str, include_inactive: bool = False) -> SessionInfo | None:
        if not self.fallback_active and self.replayer.drain(session_id):
            try:
                info = self.pg.info(session_id, include_inactive=True)
            except StoreUnavailable as exc:
                self.health.trip(exc, "info")
            else:
                self.known.put(session_id, info)
                return visible(info, include_inactive)
        # PostgreSQL is down, or still behind this session's spooled writes: the local copy, else
        # what PostgreSQL said last.
        info = self.files.info(session_id, include_inactive=True) or self.known.get(session_id)
        return visible(info, include_inactive)

    def list(self, limit: int, offset: int, include_inactive: bool) -> builtins.list[SessionInfo]:
        return self._read("list", lambda store: store.list(limit, offset, include_inactive))

    def count(self, include_inactive: bool) -> int:
        return self._read("count", lambda store: store.count(include_inactive))

    def active_ids(self) -> builtins.list[str]:
        return self._read("restore", lambda store: store.active_ids())

    def statistics(self) -> dict[str, Any]:
        return self._read("statistics", lambda store: store.statistics())

    def ping(self) -> dict[str, Any]:
        result = self.pg.ping()
        if not result["ok"] and self.health.reason and "error" not in result:
            result["error"] = self.health.reason
        if not result["ok"]:
            self.health.trip(StoreUnavailable(result.get("error", "unreachable")), "connection test")
        result["fallback_active"] = self.fallback_active
        result["spool_depth"] = self.spool.depth()
        return result

    def _read(self, what: str, call: Callable[[SessionStore], T]) -> T:
        if not self.fallback_active:
            try:
                return call(self.pg)
            except StoreUnavailable as exc:
                self.health.trip(exc, what)
        return call(self.files)

    # ------------------------------------------------------------------ the turn lock

    @contextmanager
    def lock(self, session_id: str, timeout: float | None = None) -> Iterator[None]:
        """PostgreSQL's per-session lock while it answers; a file lock under the data dir while it
        does not (other instances do not see that one: saves made under it are spooled, and
        replay merges them)."""
        if not self.fallback_active:
            try:
                cm = self.pg.lock(session_id, timeout)
                cm.__enter__()
            except StoreUnavailable as exc:
                self.health.trip(exc, "lock")
            else:
                try:
                    yield
                except BaseException as exc:
                    if not cm.__exit__(type(exc), exc, exc.__traceback__):
                        raise
                else:
                    cm.__exit__(None, None, None)
                return
        with self.files.lock(session_id, timeout):
            held: set[str] = self._outage_locks.__dict__.setdefault("sids", set())
            outer = session_id not in held
            held.add(session_id)
            try:
                yield
            finally:
                if outer:
                    held.discard(session_id)

    def _outage_locked(self, session_id: str) -> bool:
        """True inside a turn that took the file lock (PostgreSQL was down when it began)."""
        return session_id in getattr(self._outage_locks, "sids", ())


def visible(info: SessionInfo | None, include_inactive: bool) -> SessionInfo | None:
    """``info`` unless it describes a deleted or expired session and those are not wanted."""
    if info is None or include_inactive:
        return info
    expires = info["expires_at"]
    if not info["is_active"] or (expires is not None and expires <= datetime.now(UTC)):
        return None
    return info
