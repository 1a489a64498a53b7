"""The session manager of the guide: ``get_postgres_session_manager()`` and its methods.

:class:`SessionManager` validates every argument (an :class:`~app.errors.InvalidInput` names the
field and nothing is written), then hands the call to its backend:

* **PostgreSQL** (:class:`~app.store.postgres.PostgresSessionStore`) when ``postgres_sessions``
  is on. If PostgreSQL stops answering (stopped, reset, frozen: every operation has a
  client-side deadline), saves go to the **outage spool** (fsync'd on local disk before
  ``save_session`` returns True) and to a **file-store copy** that ``load_session`` reads until
  PostgreSQL is back. Sessions this process used before the outage stay known (their last
  version), so their turns go on. A background thread probes the server every
  ``store.spool_replay_interval_s`` and replays the spool in order, exactly once, in batches,
  each write under its session's lock in PostgreSQL so it merges with other instances' turns; a
  turn on a session with a backlog replays that session first.
* **Files** (:class:`~app.store.files.FileSessionStore`) when ``postgres_sessions`` is off.

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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.config import Settings, load_settings
from app.core import metrics
from app.core.lru import BoundedLRU
from app.errors import (
    InvalidInput,
    IsotopeError,
    SessionBusy,
    SessionExists,
    StoreBusy,
    StoreNotOpen,
    StoreUnavailable,
)
from app.store import codec
from app.store.base import (
    SaveResult,
    SessionInfo,
    StoredSession,
    check_expires_in_hours,
    check_metadata,
    check_paging,
    check_session_data,
    check_session_id,
    is_internal_lock_id,
)
from app.store.files import FileSessionStore
from app.store.postgres import PostgresSessionStore
from app.store.spool import Spool, UnreadableRecord
from app.store.state import CacheEntry, entry_from_loaded, plan_save

log = logging.getLogger("isotope.manager")

# Spooled writes applied per transaction: one commit (one WAL flush) for many records.
REPLAY_BATCH = 64

__all__ = ["InvalidInput", "SessionManager", "get_postgres_session_manager", "get_session_manager"]


class SessionManager:
    """Session persistence with PostgreSQL first and local files as the safety net."""

    def __init__(self, settings: Settings | None = None, *, use_postgres: bool | None = None,
                 auto_open: bool = False, embedded_cleanup: str | None = "stop") -> None:
        self.settings = settings if settings is not None else load_settings()
        cfg = self.settings.store
        self.use_postgres = self.settings.postgres_sessions if use_postgres is None else use_postgres
        self.files = FileSessionStore(self.settings.data_dir, cfg)
        self.pg: PostgresSessionStore | None = None
        self.spool: Spool | None = None
        if self.use_postgres:
            self.pg = PostgresSessionStore(self.settings.conninfo(), cfg, self.settings.data_dir,
                                           embedded_cleanup)
            self.spool = Spool(self.settings.data_dir)
        self._auto_open = auto_open
        self._opened = False
        self._open_lock = threading.Lock()
        self._down_since: float | None = None
        self._down_reason: str | None = None
        self._spool_lock = threading.RLock()
        self._spool_cache: dict[str, CacheEntry] = {}
        self._spool_prev: dict[str, str] = {}
        # What PostgreSQL last said about each recently used session, so that during an outage a
        # session this process was working on is still known (and its version right) before it
        # has a local copy; without it the first turn after the server dies finds "no session".
        self._known: BoundedLRU[SessionInfo] = BoundedLRU(max(self.settings.store.cache_sessions, 1))
        self._replaying = threading.Lock()  # one replay pass at a time in this process
        self._waiting = 0  # turns waiting for it: a background pass stops early for them
        self._waiting_lock = threading.Lock()
        self._outage_locks = threading.local()  # sessions this thread holds by file lock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._replayer: threading.Thread | None = None
        self.last_replay: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def backend(self) -> str:
        return "postgres" if self.pg is not None else "files"

    @property
    def fallback_active(self) -> bool:
        return self._down_since is not None

    def open(self) -> SessionManager:
        with self._open_lock:
            if self._opened:
                return self
            self.files.open()
            if self.pg is not None and self.spool is not None:
                self.spool.open()
                try:
                    self.pg.open()
                except StoreUnavailable as exc:
                    self._trip(exc, "open")
                self._stop.clear()
                self._replayer = threading.Thread(target=self._replay_loop, name="isotope-spool-replay",
                                                  daemon=True)
                self._replayer.start()
                metrics.SPOOL_DEPTH.set(self.spool.depth())
            self._opened = True
            log.info("session manager open: backend=%s data_dir=%s", self.backend, self.settings.data_dir)
            return self

    def close(self) -> None:
        with self._open_lock:
            if not self._opened:
                return
            self._stop.set()
            self._wake.set()
            if self._replayer is not None:
                self._replayer.join(timeout=10)
            if self.pg is not None:
                self.pg.close()
            self._opened = False

    def __enter__(self) -> SessionManager:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ready(self) -> None:
        if not self._opened:
            if not self._auto_open:
                raise StoreNotOpen("this SessionManager is not open; call open() or use it in a with block")
            self.open()

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
        return self._read("list", lambda store: store.list(limit, offset, bool(include_inactive)))

    def count_sessions(self, include_inactive: bool = False) -> int:
        return self._read("count", lambda store: store.count(bool(include_inactive)))

    def delete_session(self, session_id: str, soft_delete: bool = True) -> bool:
        """Soft delete (deactivate) or hard delete. False for an unknown id."""
        check_session_id(session_id)
        self._ready()
        if self.pg is None:
            return self.files.delete(session_id, bool(soft_delete))
        with self._spool_lock:
            pending = self.spool is not None and self.spool.has_pending(session_id)
            if not self.fallback_active and not pending:
                try:
                    self._known.put(session_id, None)
                    return self.pg.delete(session_id, bool(soft_delete))
                except StoreUnavailable as exc:
                    self._trip(exc, "delete")
            return self._spool_delete(session_id, bool(soft_delete))

    def get_session_statistics(self) -> dict[str, Any]:
        stats = self._read("statistics", lambda store: store.statistics())
        stats["fallback_active"] = self.fallback_active
        stats["spool_depth"] = self.spool.depth() if self.spool is not None else 0
        metrics.SESSIONS_ACTIVE.set(stats["active_sessions"])
        return stats

    def cleanup_expired_sessions(self, hard_delete: bool = False, inactive_for_hours: float | None = None) -> int:
        """Deactivate (or, with hard_delete, remove) expired sessions; return how many."""
        if inactive_for_hours is not None:
            inactive_for_hours = check_expires_in_hours(inactive_for_hours)
        count = self._read("cleanup", lambda store: store.cleanup_expired(bool(hard_delete), inactive_for_hours))
        if count:
            log.info("cleanup %s %d expired sessions", "removed" if hard_delete else "deactivated", count)
        return count

    def restore_all_sessions(self, limit: int | None = None, include_data: bool = False) -> dict[str, Any]:
        """Load every active session (newest first, at most ``limit``); report what failed."""
        started = time.perf_counter()
        ids = self._read("restore", lambda store: store.active_ids())
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
        self._ready()
        if self.pg is None:
            return self.files.ping()
        result = self.pg.ping()
        if not result["ok"] and self._down_reason and "error" not in result:
            result["error"] = self._down_reason
        if not result["ok"]:
            self._trip(StoreUnavailable(result.get("error", "unreachable")), "connection test")
        result["fallback_active"] = self.fallback_active
        result["spool_depth"] = self.spool.depth() if self.spool is not None else 0
        return result

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
        self._ready()
        started = time.perf_counter()
        try:
            result = self._save(session_id, session_data, metadata, hours)
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

    def _save(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
              hours: float | None) -> SaveResult:
        if self.pg is None:
            return self.files.save(session_id, data, metadata, hours)
        uncertain = False
        # A turn that began during the outage holds only a file lock, which other instances do
        # not see: if PostgreSQL came back meanwhile, its save still goes to the spool, whose
        # replay takes the session's lock in PostgreSQL and merges with whatever they wrote.
        if not self.fallback_active and not self._outage_locked(session_id) and self._drain(session_id):
            try:
                result = self.pg.save(session_id, data, metadata, hours)
            except StoreUnavailable as exc:
                self._trip(exc, "save")
                uncertain = True
            else:
                self._remember_save(session_id, result, metadata, hours)
                return result
        return self._spool_save(session_id, data, metadata, hours, uncertain)

    def create(self, session_id: str, session_data: dict[str, Any], metadata: dict[str, Any] | None = None,
               expires_in_hours: float | None = None) -> SaveResult:
        """Store a new session (version 1). SessionExists when the id is taken, even by a
        deleted session: the store's uniqueness constraint decides, not a prior lookup. During
        an outage the id can only be checked against this data dir; a clash found at replay is
        merged like any concurrent write."""
        check_session_id(session_id)
        check_session_data(session_data)
        check_metadata(metadata)
        hours = check_expires_in_hours(expires_in_hours)
        self._ready()
        if self.pg is None:
            return self.files.create(session_id, session_data, metadata, hours)
        if not self.fallback_active and self._drain(session_id):
            try:
                result = self.pg.create(session_id, session_data, metadata, hours)
            except StoreUnavailable as exc:
                self._trip(exc, "create")
            else:
                self._remember_save(session_id, result, metadata, hours)
                return result
        if self.files.info(session_id, include_inactive=True) is not None or session_id in self._spool_cache:
            raise SessionExists(session_id)
        return self._spool_save(session_id, session_data, metadata, hours, uncertain=True)

    def load(self, session_id: str) -> StoredSession | None:
        """The stored session with its bookkeeping (version, timestamps), or None."""
        check_session_id(session_id)
        self._ready()
        started = time.perf_counter()
        if self.pg is None:
            return self.files.load(session_id)
        stored: StoredSession | None
        if not self.fallback_active and self._drain(session_id):
            try:
                stored = self.pg.load(session_id)
                metrics.LOAD_SECONDS.labels("postgres").observe(time.perf_counter() - started)
            except StoreUnavailable as exc:
                self._trip(exc, "load")
            else:
                self._known.put(session_id, stored.info() if stored is not None else None)
                return stored
        stored = self.files.load(session_id)
        if stored is None and self.files.info(session_id, include_inactive=True) is None \
                and _visible(self._known.get(session_id), False) is not None:
            raise StoreUnavailable(
                f"PostgreSQL is unreachable ({self._down_reason or 'outage'}) and session {session_id!r} has no "
                "local copy in this process yet; load it again when PostgreSQL answers"
            )
        return stored

    def session_info(self, session_id: str, include_inactive: bool = False) -> SessionInfo | None:
        check_session_id(session_id)
        self._ready()
        if self.pg is None:
            return self.files.info(session_id, bool(include_inactive))
        if not self.fallback_active and self._drain(session_id):
            try:
                info = self.pg.info(session_id, include_inactive=True)
            except StoreUnavailable as exc:
                self._trip(exc, "info")
            else:
                self._known.put(session_id, info)
                return _visible(info, bool(include_inactive))
        # PostgreSQL is down, or still behind this session's spooled writes: the local copy, else
        # what PostgreSQL said last.
        info = self.files.info(session_id, include_inactive=True) or self._known.get(session_id)
        return _visible(info, bool(include_inactive))

    @contextmanager
    def lock(self, session_id: str, timeout: float | None = None) -> Iterator[None]:
        """Exclusive per-session lock across threads, processes and instances sharing the database.

        PostgreSQL's advisory lock while it answers (saves inside reuse the lock's connection);
        a file lock under the data dir while it does not. ``session_id`` may also be an
        :func:`~app.store.base.internal_lock_id`.
        """
        if not is_internal_lock_id(session_id):
            check_session_id(session_id)
        self._ready()
        if self.pg is not None and not self.fallback_active:
            try:
                cm = self.pg.lock(session_id, timeout)
                cm.__enter__()
            except StoreUnavailable as exc:
                self._trip(exc, "lock")
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
            if self.pg is None:
                yield
                return
            held: set[str] = self._outage_locks.__dict__.setdefault("sids", set())
            outer = session_id not in held
            held.add(session_id)
            try:
                yield
            finally:
                if outer:
                    held.discard(session_id)

    def _remember_save(self, session_id: str, result: SaveResult, metadata: dict[str, Any] | None,
                       hours: float | None) -> None:
        """Note what PostgreSQL holds after a save (the row's timestamps are not returned; ours
        are close enough)."""
        before = self._known.get(session_id)
        now = datetime.now(UTC)
        self._known.put(session_id, SessionInfo(
            session_id=session_id,
            metadata=dict(metadata) if metadata is not None else before["metadata"] if before else {},
            created_at=before["created_at"] if before else now, last_updated=now,
            expires_at=now + timedelta(hours=hours) if hours is not None else before["expires_at"] if before else None,
            version=result.version, is_active=True, message_count=result.message_count,
        ))

    def _outage_locked(self, session_id: str) -> bool:
        """True inside a turn that took the file lock (PostgreSQL was down when it began)."""
        return session_id in getattr(self._outage_locks, "sids", ())

    def status(self) -> dict[str, Any]:
        """Backend, fallback state and spool depth (for /ready, doctor and metrics)."""
        depth = self.spool.depth() if self.spool is not None else 0
        metrics.SPOOL_DEPTH.set(depth)
        return {
            "backend": self.backend,
            "fallback_active": self.fallback_active,
            "down_since": self._down_since,
            "reason": self._down_reason,
            "spool_depth": depth,
            "last_replay": self.last_replay,
        }

    # ------------------------------------------------------------------ fallback machinery

    def _read(self, what: str, call: Any) -> Any:
        self._ready()
        if self.pg is None:
            return call(self.files)
        if not self.fallback_active:
            try:
                return call(self.pg)
            except StoreUnavailable as exc:
                self._trip(exc, what)
        return call(self.files)

    def _trip(self, exc: BaseException, what: str) -> None:
        if isinstance(exc, StoreBusy):
            # Saturation is not an outage: falling back would only move the load to the spool.
            metrics.STORE_ERRORS.labels(f"{what}_busy").inc()
            raise exc
        metrics.STORE_ERRORS.labels(what).inc()
        if self._down_since is None:
            self._down_since = time.time()
            self._down_reason = str(exc)
            metrics.FALLBACK_ACTIVE.set(1)
            log.warning("PostgreSQL unreachable during %s (%s); using the file store and the outage "
                        "spool until it answers again", what, exc)
        self._wake.set()

    def _recovered(self) -> None:
        down_for = time.time() - (self._down_since or time.time())
        self._down_since = None
        self._down_reason = None
        metrics.FALLBACK_ACTIVE.set(0)
        log.warning("PostgreSQL answers again after %.1f s; replaying the outage spool", down_for)

    def _drain(self, session_id: str) -> bool:
        """True when the session has no spooled writes left (replaying them first if possible).

        If the background thread is replaying, it is asked to stop after its current record and
        this call waits for it (at most ``store.connect_timeout_s``), then replays this session's
        backlog itself. Spooling instead would keep the session behind the replay for as long as
        turns arrive faster than a pass ends.
        """
        assert self.spool is not None
        if not self.spool.has_pending(session_id):
            return True
        with self._waiting_lock:
            self._waiting += 1
        try:
            self.replay_spool(session_id, wait=self.settings.store.connect_timeout_s)
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        return not self.spool.has_pending(session_id)

    def _spool_save(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
                    hours: float | None, uncertain: bool) -> SaveResult:
        assert self.pg is not None and self.spool is not None
        with self._spool_lock:
            seed = self._spool_cache.get(session_id)
            prev = self._spool_prev.get(session_id)
            base_version = None
            if seed is None:
                seed, prev, base_version = self._spool_seed(session_id)
            if seed is None and (known := self._known.get(session_id)) is not None:
                # A whole-history write, but based on the version PostgreSQL last showed: replay
                # applies it exactly (edits included) if nobody else wrote since, else merges.
                base_version = known["version"]
            plan = plan_save(session_id, data, metadata, hours, seed, self.pg._limits)
            full = plan.all_texts is not None
            now = datetime.now(UTC)
            if seed is not None:
                version = seed.version + 1
            else:
                info = self.files.info(session_id, include_inactive=True) or self._known.get(session_id)
                version = info["version"] + 1 if info is not None else 1
            write_id = str(uuid.uuid4())
            record: dict[str, Any] = {
                "kind": "save", "write_id": write_id, "session_id": session_id,
                "acked_at": now.isoformat(), "prev": prev, "base_version": base_version,
                # How many messages the writer believed were stored before this write: replay
                # applies the delta in place only if PostgreSQL holds exactly that many (an
                # earlier write of the chain may have been merged after other instances' turns).
                "prev_count": seed.count if seed is not None and not full else None,
                "base_count": plan.base_count, "rewrite": plan.rewrite, "full": full,
                "texts": plan.all_texts if full else plan.new_texts,
                "session_data": plan.session_data_text, "members_upsert": plan.upsert_members,
                "members_delete": plan.delete_members, "members_full": full,
                "metadata": plan.metadata_text, "created_at": now.isoformat(),
                "expires_at": (now + timedelta(hours=hours)).isoformat() if hours is not None else None,
                "uncertain": uncertain,
            }
            self.spool.append(record)
            self.files.save(session_id, data, metadata, hours, version=version)
            plan.entry.version = version
            self._spool_cache[session_id] = plan.entry
            self._spool_prev[session_id] = write_id
            metrics.SPOOL_DEPTH.inc()
        return SaveResult(session_id=session_id, version=version, message_count=plan.message_count,
                          backend="spool", skipped=plan.skipped, appended=len(plan.new_texts),
                          rewritten=plan.rewrite)

    def _spool_seed(self, session_id: str) -> tuple[CacheEntry | None, str | None, int | None]:
        """What the first spooled write of a session (in this process) is a delta against.

        PostgreSQL's state as this process last saw it, if it remembers; else, when earlier
        writes of the session are still spooled (a process that died during the outage), the
        local copy they produced, chained after the last of them. Otherwise nothing: the write
        carries the whole message list.
        """
        assert self.pg is not None and self.spool is not None
        entry = self.pg.cache_entry(session_id)
        if entry is not None:
            return entry, None, entry.version
        pending = self.spool.pending(session_id)
        try:
            last = self.spool.read(pending[-1]) if pending else None
        except UnreadableRecord:
            last = None  # replay quarantines it; chain nothing to it
        if last is None:
            return None, None, None
        stored = self.files.load(session_id)
        if stored is None:
            return None, None, None
        messages = stored.data.get("messages") if isinstance(stored.data.get("messages"), list) else []
        texts = [codec.dumps(codec.encode(m, "message").value) for m in messages or []]
        size = sum(len(t.encode("utf-8")) for t in texts)
        entry = entry_from_loaded(stored.version, stored.data, set(), size, "[" + ",".join(texts) + "]")
        return entry, last["write_id"], None

    def _spool_delete(self, session_id: str, soft: bool) -> bool:
        assert self.spool is not None and self.pg is not None
        known = self.pg.cache_entry(session_id) is not None or session_id in self._spool_cache \
            or self.files.info(session_id, include_inactive=True) is not None \
            or self._known.get(session_id) is not None
        if not known:
            return False
        self.spool.append({"kind": "delete", "soft": soft, "write_id": str(uuid.uuid4()),
                           "session_id": session_id, "acked_at": datetime.now(UTC).isoformat()})
        self._spool_cache.pop(session_id, None)
        self._spool_prev.pop(session_id, None)
        self._known.put(session_id, None)
        self.files.delete(session_id, soft)
        return True

    def replay_spool(self, session_id: str | None = None, wait: float = 0.0) -> dict[str, Any]:
        """Replay spooled writes into PostgreSQL now (all, or one session's); report counts.

        One replay at a time per data dir: waits up to ``wait`` seconds for another thread of
        this process, and gives up at once if another process is replaying.
        """
        report = {"replayed": 0, "failed": 0, "remaining": 0, "seconds": 0.0}
        if self.pg is None or self.spool is None:
            return report
        if not self._replaying.acquire(timeout=wait):
            report["remaining"] = self.spool.depth()
            return report
        try:
            return self._replay(session_id, report)
        finally:
            self._replaying.release()

    def _replay(self, session_id: str | None, report: dict[str, Any]) -> dict[str, Any]:
        assert self.pg is not None and self.spool is not None
        started = time.perf_counter()
        done: set[str] = set()
        busy: set[str] = set()
        produced: dict[str, int] = {}
        with self.spool.replay_lock() as mine:
            if not mine:
                report["remaining"] = self.spool.depth()
                return report
            pending = self.spool.pending(session_id)
            while pending:
                if session_id is None and self._waiting:
                    break  # a turn waits to replay its own session; the next pass resumes here
                batch = self._next_batch(pending, busy, report)
                if batch and not self._replay_batch(batch, produced, busy, report, done):
                    break
        with self._spool_lock:
            for sid in done:
                if not self.spool.has_pending(sid):
                    self._known.put(sid, self.files.info(sid, include_inactive=True))
                    self.files.remove_copy(sid)
                    self._spool_cache.pop(sid, None)
                    self._spool_prev.pop(sid, None)
        report["remaining"] = self.spool.depth()
        report["seconds"] = round(time.perf_counter() - started, 4)
        metrics.SPOOL_DEPTH.set(report["remaining"])
        if report["replayed"] or report["failed"]:
            self.last_replay = {**report, "finished_at": datetime.now(UTC).isoformat()}
            log.warning("outage spool: replayed %d writes in %.2f s (%d failed, %d left)", report["replayed"],
                        report["seconds"], report["failed"], report["remaining"])
        return report

    def _next_batch(self, pending: list[Path], busy: set[str],
                    report: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
        """Take up to REPLAY_BATCH readable records off the front of ``pending``."""
        assert self.spool is not None
        batch: list[tuple[Path, dict[str, Any]]] = []
        while pending and len(batch) < REPLAY_BATCH:
            path = pending.pop(0)
            try:
                record = self.spool.read(path)
            except UnreadableRecord as exc:
                self._quarantine(path, exc, {}, report)
                continue
            if record is not None and record.get("session_id") not in busy:
                batch.append((path, record))
        return batch

    def _replay_batch(self, batch: list[tuple[Path, dict[str, Any]]], produced: dict[str, int], busy: set[str],
                      report: dict[str, Any], done: set[str]) -> bool:
        """Apply a batch in one transaction; one record at a time if that fails. False: stop."""
        assert self.pg is not None and self.spool is not None
        try:
            versions = self.pg.apply_spooled_batch([record for _, record in batch], produced)
        except StoreUnavailable as exc:
            self._trip(exc, "spool replay")
            return False
        except (IsotopeError, KeyError, TypeError, ValueError) as exc:
            if len(batch) > 1:  # a busy session or a bad record in it: find which, one at a time
                return self._replay_each(batch, produced, busy, report, done)
            path, record = batch[0]
            if isinstance(exc, SessionBusy):
                busy.add(record["session_id"])  # its later writes wait too: order is kept
            else:
                self._quarantine(path, exc, record, report)
            return True
        for (path, record), version in zip(batch, versions, strict=True):
            produced[record["write_id"]] = version
            self.spool.remove(path)  # after the commit: a crash before this replays nothing twice
            done.add(record["session_id"])
        metrics.SPOOL_REPLAYED.inc(len(batch))
        report["replayed"] += len(batch)
        return True

    def _replay_each(self, batch: list[tuple[Path, dict[str, Any]]], produced: dict[str, int], busy: set[str],
                     report: dict[str, Any], done: set[str]) -> bool:
        for item in batch:
            if item[1]["session_id"] not in busy and not self._replay_batch([item], produced, busy, report, done):
                return False
        return True

    def _quarantine(self, path: Path, exc: Exception, record: dict[str, Any], report: dict[str, Any]) -> None:
        assert self.spool is not None
        self.spool.quarantine(path, f"{type(exc).__name__}: {exc}")
        log.error("spooled write %s for session %r cannot be replayed and was moved to %s: %s",
                  record.get("write_id"), record.get("session_id"), self.spool.failed, exc)
        report["failed"] += 1

    def _replay_loop(self) -> None:
        interval = self.settings.store.spool_replay_interval_s
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._replay_tick()
            except Exception:  # a background thread must outlive any one failure
                log.exception("outage spool replay failed; retrying in %.1f s", interval)

    def _replay_tick(self) -> None:
        assert self.pg is not None and self.spool is not None
        if self.fallback_active:
            if self.pg.conninfo is None:
                try:
                    self.pg.open()  # the embedded server failed to start earlier
                except StoreUnavailable:
                    return
            if not self.pg.probe():
                return
            self.pg.reset_pool()
            self._recovered()
        # Drain to the end now: turns on a session with a backlog keep spooling until it is
        # replayed, so one pass per interval would trail them by an interval each time.
        while not (self._stop.is_set() or self.fallback_active or self._waiting) and self.spool.pending():
            if not self.replay_spool()["replayed"]:
                return


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


def _visible(info: SessionInfo | None, include_inactive: bool) -> SessionInfo | None:
    if info is None or include_inactive:
        return info
    expires = info["expires_at"]
    if not info["is_active"] or (expires is not None and expires <= datetime.now(UTC)):
        return None
    return info


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
