"""The PostgreSQL session store: append-only messages, one statement per save on the hot path.

A save is planned in memory first (:func:`app.store.state.plan_save`): when this process knows
the stored version, the new messages and changed large members go out in one ``APPEND``
statement (one round trip, one commit) guarded by ``version = expected``. Otherwise (new
process, another writer, a history rewrite) a short transaction locks the row, lets PostgreSQL
find the first differing message, cuts there and appends the rest.

Only this module (and the schema module) import psycopg. Driver errors become domain errors in
:meth:`_translated`: unreachable server -> :class:`StoreUnavailable`, lock timeout ->
:class:`SessionBusy`, rejected data -> :class:`InvalidInput`.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from app.config import StoreConfig, redact_conninfo
from app.errors import (
    InvalidInput,
    IsotopeError,
    SessionBusy,
    SessionExists,
    StaleSession,
    StoreBusy,
    StoreNotOpen,
    StoreUnavailable,
)
from app.store import codec, sql
from app.store.base import SaveResult, SessionInfo, StoredSession
from app.store.embedded import EmbeddedPostgres
from app.store.schema import LATEST_VERSION, migrate, schema_version
from app.store.state import CacheEntry, Limits, Plan, SessionCache, assemble, entry_from_loaded, plan_save

log = logging.getLogger("isotope.store.postgres")
T = TypeVar("T")

# psycopg_pool logs every failed reconnection attempt at WARNING; the manager already reports an
# outage once, with what it does about it. Keep the pool's retries out of users' terminals.
if logging.getLogger("psycopg.pool").level == logging.NOTSET:
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


class _Raced(Exception):
    """Another writer created the row between our lock attempt and our insert; go again."""


_CHANGED = object()  # the deferred prefix check found an old message edited in place


class _Frozen(Exception):
    """The server took no notice of a request within the client-side deadline."""


class _Guard:
    __slots__ = ("deadline", "conn", "fired")

    def __init__(self, deadline: float, conn: psycopg.Connection[Any]) -> None:
        self.deadline = deadline
        self.conn = conn
        self.fired = False


class Deadlines:
    """Client-side deadlines: a connection busy past its deadline has its socket shut down.

    A frozen server (SIGSTOP, a storage stall that blocks its processes, a paused VM) still has
    its kernel acknowledge TCP: keepalives and tcp_user_timeout never fire, the server cannot
    enforce statement_timeout, and a query would wait as long as the freeze lasts. Shutting the
    socket down makes the waiting call fail at once, as a reset connection does, and the manager
    falls back to the outage spool. One thread per process (:data:`DEADLINES`), started on first
    use, checks four times a second.
    """

    def __init__(self) -> None:
        self._guards: set[_Guard] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[_Guard]:
        guard = _Guard(time.monotonic() + seconds, conn)
        with self._lock:
            self._guards.add(guard)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="isotope-deadlines", daemon=True)
                self._thread.start()
        try:
            yield guard
        finally:
            with self._lock:
                self._guards.discard(guard)

    def _watch(self) -> None:
        tick = threading.Event()
        while True:
            tick.wait(0.25)
            now = time.monotonic()
            with self._lock:
                late = [g for g in self._guards if g.deadline <= now and not g.fired]
                for guard in late:
                    guard.fired = True
            for guard in late:
                _shut_down(guard.conn)


# One watchdog per process, shared by every store.
DEADLINES = Deadlines()


def _shut_down(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(OSError, psycopg.Error, ValueError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class PostgresSessionStore:
    """Sessions in PostgreSQL. Construct, then :meth:`open` (the caller owns the pool)."""

    name = "postgres"

    def __init__(self, conninfo: str | None, config: StoreConfig, data_dir: Path | None = None,
                 embedded_cleanup: str | None = "stop") -> None:
        self._conninfo = conninfo
        self._embedded = EmbeddedPostgres(data_dir or Path("data"), embedded_cleanup) if conninfo is None else None
        self.config = config
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pool_lock = threading.Lock()
        self._cache = SessionCache(config.cache_sessions, config.cache_messages)
        self._limits = Limits(config.max_message_bytes, config.max_session_bytes, config.inline_member_bytes)
        self._held = threading.local()
        self._deadlines = DEADLINES
        # Each operation's client-side bound: the server's statement timeout, plus the time a
        # fresh connection may take.
        self._op_deadline = config.statement_timeout_s + config.connect_timeout_s
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def embedded(self) -> EmbeddedPostgres | None:
        return self._embedded

    @property
    def conninfo(self) -> str | None:
        return self._conninfo

    def open(self) -> None:
        if self._pool is not None:
            return
        if self._embedded is not None:
            self._conninfo = self._embedded.start()
        self._pool = self._new_pool()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=2.0)
        if self._embedded is not None:
            self._embedded.stop()
        self._cache.clear()

    def migrate(self) -> list[int]:
        """Apply missing migrations now; return the versions applied."""
        def work(conn: psycopg.Connection[Any], _: int) -> list[int]:
            applied = migrate(conn)
            self._schema_ready = True
            return applied

        with self._translated("migrate"), self._require_pool().connection(
                timeout=self.config.connect_timeout_s) as conn:
            return work(conn, 1)

    def reset_pool(self) -> None:
        """Swap in a fresh pool (after an outage, psycopg_pool's reconnect back-off can lag)."""
        with self._pool_lock:
            old, self._pool = self._pool, self._new_pool()
        if old is not None:
            threading.Thread(target=old.close, kwargs={"timeout": 5.0}, daemon=True).start()

    def _new_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": cfg.prepare_threshold,
            "connect_timeout": max(2, math.ceil(cfg.connect_timeout_s)),
            "application_name": "isotope",
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3, "keepalives_count": 3,
            "tcp_user_timeout": int(cfg.statement_timeout_s * 1000),
        }
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._conninfo or "", min_size=cfg.pool_min_size, max_size=cfg.pool_max_size,
            kwargs=kwargs, configure=self._configure, open=False, name="isotope",
            timeout=cfg.connect_timeout_s, reconnect_timeout=3600.0,
        )
        pool.open(wait=False)
        return pool

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        cfg = self.config
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            (f"{int(cfg.statement_timeout_s * 1000)}ms", f"{int(cfg.statement_timeout_s * 3000)}ms"),
        )

    def _require_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        if self._pool is None:
            raise StoreNotOpen("the PostgreSQL session store is not open; call open() first")
        return self._pool

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                migrate(conn)
                self._schema_ready = True

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except PoolTimeout as exc:
            if self._pool_saturated():
                raise StoreBusy(
                    f"all {self.config.pool_max_size} PostgreSQL connections stayed busy for "
                    f"{self.config.connect_timeout_s:g} s ({what}); retry, or raise store.pool_max_size"
                ) from exc
            raise StoreUnavailable(
                f"PostgreSQL did not provide a connection within {self.config.connect_timeout_s:g} s "
                f"({what}); check that the server is running and reachable"
            ) from exc
        except PoolClosed as exc:
            raise StoreNotOpen("the PostgreSQL session store is closed; call open() first") from exc
        except psycopg.errors.LockNotAvailable as exc:
            raise SessionBusy(f"{what}: the session is locked by another turn; retry later") from exc
        except psycopg.errors.QueryCanceled as exc:
            raise StoreUnavailable(
                f"PostgreSQL did not finish {what} within {self.config.statement_timeout_s:g} s "
                "(store.statement_timeout_s)"
            ) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL is unreachable ({what}): {_first_line(exc)}") from exc
        except psycopg.DataError as exc:
            raise InvalidInput("session_data", f"PostgreSQL rejected the data: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise IsotopeError(f"PostgreSQL failed during {what}: {_first_line(exc)}") from exc

    def _pool_saturated(self) -> bool:
        """A checkout timed out because every connection is lent out (load), not because none
        can be made (an outage): the pool is at its maximum size with nothing idle."""
        pool = self._pool
        if pool is None:
            return False
        stats = pool.get_stats()
        return stats.get("pool_size", 0) >= stats.get("pool_max", 0) and stats.get("pool_available", 0) == 0

    @contextmanager
    def _connection(self, sid: str | None = None, guarded: bool = True) -> Iterator[psycopg.Connection[Any]]:
        held = getattr(self._held, "conns", None)
        if sid is not None and held and sid in held:
            with self._bounded(held[sid], self._op_deadline):
                yield held[sid]
            return
        with self._require_pool().connection(timeout=self.config.connect_timeout_s) as conn:
            if not guarded:
                self._ensure_schema(conn)
                yield conn
                return
            with self._bounded(conn, self._op_deadline):
                self._ensure_schema(conn)
                yield conn

    @contextmanager
    def _bounded(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
        """Fail what runs on ``conn`` if the server has not answered within ``seconds``."""
        with self._deadlines.guard(conn, seconds) as guard:
            try:
                yield
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if not guard.fired:
                    raise
                # Not a dead connection to retry at once: the server itself does not answer.
                raise StoreUnavailable(
                    f"PostgreSQL did not answer within {seconds:g} s (store.statement_timeout_s + "
                    "store.connect_timeout_s); it may be frozen or overloaded"
                ) from _Frozen(str(exc))

    def _run(self, what: str, fn: Callable[[psycopg.Connection[Any], int], T], sid: str | None = None) -> T:
        """Run ``fn`` on a connection; again on a fresh one (twice at most) if it died under us.

        Two retries, not one: pg_terminate_backend and a server restart kill every connection,
        and a backend signalled a moment ago still passes the pool's check before it exits."""
        for attempt in (1, 2, 3):
            try:
                with self._translated(what), self._connection(sid if attempt == 1 else None) as conn:
                    return fn(conn, attempt)
            except StoreUnavailable as exc:
                if attempt == 3 or not _connection_died(exc.__cause__):
                    raise
                log.info("retrying %s on a new connection after: %s", what, _first_line(exc.__cause__))
                self._drop_dead_connections()
        raise AssertionError("unreachable")

    def _drop_dead_connections(self) -> None:
        """After one connection died, test the idle ones (a server restart or a mass
        pg_terminate_backend kills them all) so the retry does not get another dead one."""
        pool = self._pool
        if pool is not None:
            with contextlib.suppress(psycopg.Error, PoolClosed):
                pool.check()

    # ------------------------------------------------------------------ writes

    def save(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
             expires_in_hours: float | None) -> SaveResult:
        def replan(entry: CacheEntry | None = None) -> Plan:
            return plan_save(session_id, data, metadata, expires_in_hours, entry, self._limits)

        cached = self._cache.get(session_id)
        plan = plan_save(session_id, data, metadata, expires_in_hours, cached, self._limits, defer_check=True)
        # Until the outcome is known the cache must not vouch for the stored state.
        self._cache.drop(session_id)

        locked = self._holds(session_id)

        def write(conn: psycopg.Connection[Any], attempt: int) -> tuple[tuple[Any, ...], Plan]:
            current = plan if attempt == 1 else replan()
            if attempt > 1 and locked:
                return self._write_after_lost_lock(conn, current, replan)
            if current.expected_version is not None and not current.rewrite:
                row = self._append(conn, current)
                if row is not _CHANGED and row is not None:
                    return row, current  # type: ignore[return-value]
                # An old message changed in place: a rewrite from the first difference, still
                # guarded by the cached version. Or the version moved: a full diff.
                current = replan(cached) if row is _CHANGED else replan()
            return self._locked_write(conn, current, replan)

        row, used = self._run("save", write, sid=session_id)
        used.entry.version = row[0]
        self._cache.put(session_id, used.entry)
        return SaveResult(
            session_id=session_id, version=row[0], message_count=used.message_count, backend=self.name,
            skipped=used.skipped, appended=len(used.new_texts), rewritten=used.rewrite,
        )

    def create(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
               expires_in_hours: float | None) -> SaveResult:
        """Store a new session; SessionExists if the id is taken (the primary key decides)."""
        plan = plan_save(session_id, data, metadata, expires_in_hours, None, self._limits)

        def write(conn: psycopg.Connection[Any], _: int) -> tuple[Any, ...]:
            with conn.transaction():
                row = conn.execute(sql.CREATE_ROW, _row_params(plan)).fetchone()  # type: ignore[arg-type]
                if row is None:
                    raise SessionExists(session_id)
                _insert_messages(conn, session_id, 0, plan.all_texts or [])
                _write_members(conn, session_id, plan.upsert_members)
                return row

        row = self._run("create", write, sid=session_id)
        plan.entry.version = row[0]
        self._cache.put(session_id, plan.entry)
        return SaveResult(session_id=session_id, version=row[0], message_count=plan.message_count,
                          backend=self.name, skipped=plan.skipped, appended=plan.message_count)

    def _append(self, conn: psycopg.Connection[Any], plan: Plan) -> Any:
        """The one-statement save: the new row's version, None when the version moved, or
        _CHANGED when an old message was edited in place (nothing was sent then)."""
        if plan.verify is not None and not plan.verify():
            return _CHANGED
        statement, params = _append(plan)
        return conn.execute(statement, params).fetchone()  # type: ignore[arg-type]

    def _holds(self, session_id: str) -> bool:
        held: dict[str, Any] | None = getattr(self._held, "conns", None)
        return held is not None and session_id in held

    def _write_after_lost_lock(self, conn: psycopg.Connection[Any], plan: Plan,
                               replan: Callable[[], Plan]) -> tuple[tuple[Any, ...], Plan]:
        """Save a turn whose lock connection died (the advisory lock died with it): another
        instance may have taken the session and run a turn meanwhile. Write only while no turn
        holds the session, and only by appending: cutting the stored history here would delete
        that other turn (it holds the lock now, or has already saved). Otherwise StaleSession:
        this turn is not acknowledged and nothing stored changes."""
        sid = plan.session_id
        stale = StaleSession(f"session {sid!r}: this turn lost its lock with its connection and another turn "
                             "has taken the session; the turn was not saved, send the message again")
        try:
            with conn.transaction():
                row = conn.execute(sql.TRY_SESSION_XACT_LOCK, {"key": _lock_key(sid)}).fetchone()
                if row is None or not row[0]:
                    raise stale
                return self._locked_write_once(conn, plan, replan, keep_stored=stale)
        except _Raced:
            raise stale from None

    def _locked_write(self, conn: psycopg.Connection[Any], plan: Plan,
                      replan: Callable[[], Plan]) -> tuple[tuple[Any, ...], Plan]:
        while True:
            try:
                with conn.transaction():
                    return self._locked_write_once(conn, plan, replan)
            except _Raced:
                continue

    def _locked_write_once(self, conn: psycopg.Connection[Any], plan: Plan, replan: Callable[[], Plan],
                           keep_stored: Exception | None = None) -> tuple[tuple[Any, ...], Plan]:
        sid = plan.session_id
        locked = conn.execute(sql.LOCK_ROW, {"sid": sid}).fetchone()
        known = locked is not None and plan.expected_version == locked[0]
        if not known and plan.all_texts is None:
            plan = replan()
        params = _row_params(plan)
        if locked is None:
            row = conn.execute(sql.CREATE_ROW, params).fetchone()  # type: ignore[arg-type]
            if row is None:
                raise _Raced()
            _insert_messages(conn, sid, 0, plan.all_texts or [])
            _write_members(conn, sid, plan.upsert_members)
            return row, plan
        if known:
            base, texts = plan.base_count, plan.new_texts
        else:
            texts_all = plan.all_texts or []
            found = conn.execute(sql.FIRST_DIFFERENCE, {"sid": sid, "msgs": texts_all}).fetchone()
            base = len(texts_all) if found is None or found[0] is None else int(found[0])
            if keep_stored is not None and base < locked[1]:
                raise keep_stored
            texts = texts_all[base:]
            plan.rewrite = True
        conn.execute(sql.CUT_MESSAGES, {"sid": sid, "base": base})
        _insert_messages(conn, sid, base, texts)
        if known:
            _write_members(conn, sid, plan.upsert_members, delete=plan.delete_members)
        else:
            _write_members(conn, sid, plan.upsert_members, keep=list(plan.upsert_members))
        row = conn.execute(sql.UPDATE_ROW, params).fetchone()  # type: ignore[arg-type]
        assert row is not None  # the row is locked by this transaction
        return row, plan

    def delete(self, session_id: str, soft: bool) -> bool:
        statement = sql.SOFT_DELETE if soft else sql.HARD_DELETE
        self._cache.drop(session_id)
        row = self._run("delete", lambda conn, _: conn.execute(statement, {"sid": session_id}).fetchone(),
                        sid=session_id)
        return row is not None

    def cleanup_expired(self, hard: bool, inactive_for_hours: float | None = None) -> int:
        select = sql.EXPIRED_OR_STALE if hard else sql.EXPIRED_ACTIVE
        change = sql.HARD_DELETE_IF_EXPIRED if hard else sql.DEACTIVATE_IF_EXPIRED
        params: dict[str, Any] = {"batch": 500, "stale_hours": inactive_for_hours}
        done = 0
        while True:
            ids = self._run("cleanup", lambda conn, _: [r[0] for r in conn.execute(select, params)])
            for sid in ids:
                self._cache.drop(sid)
                params_one = {"sid": sid, "stale_hours": inactive_for_hours}
                row = self._run("cleanup", functools.partial(_fetch_one, change, params_one))
                done += row is not None
            if len(ids) < params["batch"]:
                return done

    # ------------------------------------------------------------------ reads

    def load(self, session_id: str) -> StoredSession | None:
        row = self._run("load", lambda conn, _: conn.execute(sql.LOAD, {"sid": session_id}).fetchone(),
                        sid=session_id)
        if row is None:
            self._cache.drop(session_id)
            return None
        try:
            session_data = codec.loads(row[0])
            metadata = codec.loads(row[1]) if row[1] is not None else {}
            messages = codec.loads(row[7]) if row[7] is not None else []
            members = codec.loads(row[8]) if row[8] is not None else {}
            data = assemble(session_data, messages, members)
        except codec.CodecError as exc:
            self._cache.drop(session_id)
            raise codec.CodecError(f"session {session_id!r} cannot be decoded: {exc}") from exc
        marker = session_data.get("messages") if isinstance(session_data.get("messages"), dict) else {}
        count = int(marker.get("count", 0)) if marker.get(codec.TAG) == "messages" else 0
        self._cache.put(session_id, entry_from_loaded(
            row[2], data, set(members), int(marker.get("bytes", 0) if count else 0), row[7]))
        return StoredSession(
            session_id=session_id, data=data, metadata=metadata if isinstance(metadata, dict) else {},
            version=row[2], created_at=row[3], last_updated=row[4], expires_at=row[5],
            is_active=row[6], message_count=count, backend=self.name,
        )

    def info(self, session_id: str, include_inactive: bool = False) -> SessionInfo | None:
        row = self._run("info", lambda conn, _: conn.execute(sql.INFO, {"sid": session_id}).fetchone(),
                        sid=session_id)
        if row is None:
            return None
        info = _info(row)
        return info if include_inactive or info["is_active"] else None

    def list(self, limit: int, offset: int, include_inactive: bool) -> builtins.list[SessionInfo]:
        statement = sql.LIST_ALL if include_inactive else sql.LIST_ACTIVE
        row = self._run("list", lambda conn, _: conn.execute(
            statement, {"limit": limit, "offset": offset}).fetchone())
        return [_info_from_json(item) for item in codec.loads(row[0])] if row else []

    def count(self, include_inactive: bool) -> int:
        statement = sql.COUNT_ALL if include_inactive else sql.COUNT_ACTIVE
        row = self._run("count", lambda conn, _: conn.execute(statement).fetchone())
        return int(row[0]) if row else 0

    def active_ids(self) -> builtins.list[str]:
        return self._run("restore", lambda conn, _: [r[0] for r in conn.execute(sql.ACTIVE_IDS)])

    def statistics(self) -> dict[str, Any]:
        row = self._run("statistics", lambda conn, _: conn.execute(sql.STATISTICS).fetchone())
        assert row is not None
        total, active = int(row[0]), int(row[1])
        return {
            "total_sessions": total,
            "active_sessions": active,
            "inactive_sessions": total - active,
            "expired_sessions": int(row[2]),
            "total_messages": int(row[3]),
            "avg_messages_per_session": round(float(row[4]), 2),
            "oldest_session": row[5],
            "newest_session": row[6],
            "sessions_last_24h": int(row[7]),
            "storage_bytes": int(row[8]),
            "backend": self.name,
        }

    def ping(self) -> dict[str, Any]:
        params = _safe_params(self._conninfo)
        result: dict[str, Any] = {
            "ok": False, "backend": self.name, "embedded": self._embedded is not None,
            "database": params.get("dbname"), "host": params.get("host"),
            "port": int(params["port"]) if str(params.get("port", "")).isdigit() else 5432,
            "server_version": None, "latency_ms": None,
        }
        try:
            result["schema_version"] = self._run("schema version", lambda conn, _: schema_version(conn))
            result["schema_latest"] = LATEST_VERSION
            started = time.perf_counter()
            row = self._run("connection test", lambda conn, _: conn.execute(sql.PING).fetchone())
            result["latency_ms"] = round((time.perf_counter() - started) * 1e3, 3)
            assert row is not None
            result.update(ok=True, database=row[0], server_version=row[1], synchronous_commit=row[2],
                          fsync=row[3])
        except IsotopeError as exc:
            result["error"] = str(exc)
        return result

    # ------------------------------------------------------------------ locking

    @contextmanager
    def lock(self, session_id: str, timeout: float | None = None) -> Iterator[None]:
        """Hold PostgreSQL's advisory lock for this session; saves inside reuse its connection."""
        wait = self.config.lock_timeout_s if timeout is None else timeout
        held: dict[str, psycopg.Connection[Any]] = self._held.__dict__.setdefault("conns", {})
        if session_id in held:  # re-entrant within a thread
            yield
            return
        with self._translated("session lock"), self._locked_connection(session_id, wait) as conn:
            held[session_id] = conn
            try:
                yield
            finally:
                held.pop(session_id, None)
                if not conn.closed:
                    # If the backend is gone, its advisory locks went with it.
                    with contextlib.suppress(psycopg.Error, StoreUnavailable), \
                            self._bounded(conn, self._op_deadline):
                        conn.execute(sql.SESSION_UNLOCK, {"key": _lock_key(session_id)})

    @contextmanager
    def _locked_connection(self, session_id: str, wait: float) -> Iterator[psycopg.Connection[Any]]:
        """A pool connection holding the session's advisory lock; taken again on a new connection
        if it turns out dead (a terminated backend, a restarted server), as in :meth:`_run`."""
        for attempt in (1, 2, 3):
            with self._connection(guarded=False) as conn:
                try:
                    # Only taking the lock is bounded here: the connection is then held for the
                    # whole turn, and the saves inside it are bounded one by one (_connection).
                    self._take_lock(conn, session_id, wait)
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    if attempt == 3 or not _connection_died(exc):
                        raise
                    log.info("retrying the session lock on a new connection after: %s", _first_line(exc))
                else:
                    yield conn
                    return
            self._drop_dead_connections()

    def _take_lock(self, conn: psycopg.Connection[Any], session_id: str, wait: float) -> None:
        """Wait for the session's lock in slices of ``connect_timeout_s``, each one bounded: a
        legitimate wait (another turn) and a frozen server look alike from here until a slice
        ends, with LockNotAvailable from a live server or the deadline's shutdown from a dead one."""
        deadline = time.monotonic() + wait
        per_slice = max(1.0, self.config.connect_timeout_s)
        while True:
            step = max(0.001, min(per_slice, deadline - time.monotonic()))
            with self._bounded(conn, step + self._op_deadline):
                conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(step * 1000))}ms",))
                try:
                    conn.execute(sql.SESSION_LOCK, {"key": _lock_key(session_id)})
                    return
                except psycopg.errors.LockNotAvailable as exc:
                    if time.monotonic() >= deadline - 0.001:
                        raise SessionBusy(
                            f"session {session_id!r} is busy in another turn (waited {wait:g} s); retry"
                        ) from exc
                finally:
                    if not conn.closed:
                        conn.execute("SELECT set_config('lock_timeout', '0', false)")

    # ------------------------------------------------------------------ outage spool

    def apply_spooled(self, record: dict[str, Any], produced: dict[str, int]) -> int:
        """Apply one spooled write exactly once; return the version it produced."""
        return self.apply_spooled_batch([record], produced)[0]

    def apply_spooled_batch(self, records: builtins.list[dict[str, Any]],
                            produced: dict[str, int]) -> builtins.list[int]:
        """Apply spooled writes, in order, in one transaction: all of them exactly once, or none.

        Raises :class:`SessionBusy` when a turn (of any instance) holds one of their sessions: a
        spooled write merged under a running turn would be cut away by that turn's save.

        ``produced`` maps earlier records' write ids to the versions they produced in this
        replay, so a chain of deltas applies exactly when nobody else wrote in between and is
        merged (appended after the other writers' messages) when somebody did. One transaction
        for many records: one commit (one WAL flush) instead of one per record.
        """
        sids = sorted({record["session_id"] for record in records})

        def work(conn: psycopg.Connection[Any], _: int) -> builtins.list[int]:
            with conn.transaction():
                for sid in sids:
                    row = conn.execute(sql.TRY_SESSION_XACT_LOCK, {"key": _lock_key(sid)}).fetchone()
                    if row is None or not row[0]:
                        raise SessionBusy(f"session {sid!r} is in a turn; its spooled writes wait for the next pass")
                seen = dict(produced)
                versions = []
                for record in records:
                    seen[record["write_id"]] = self._apply_spooled(conn, record, seen)
                    versions.append(seen[record["write_id"]])
                return versions

        # A turn holding its session's lock replays that session on the lock's own connection.
        versions = self._run("spool replay", work, sid=sids[0] if len(sids) == 1 else None)
        for sid in sids:
            self._cache.drop(sid)
        return versions

    def _apply_spooled(self, conn: psycopg.Connection[Any], rec: dict[str, Any],
                       produced: dict[str, int]) -> int:
        sid, ids = rec["session_id"], {"sid": rec["session_id"], "wid": rec["write_id"]}
        done = conn.execute(sql.SPOOL_ALREADY_APPLIED, ids).fetchone()
        if done is not None:
            return int(done[0])
        if rec["kind"] == "delete":
            row = conn.execute(sql.SOFT_DELETE if rec["soft"] else sql.HARD_DELETE, {"sid": sid}).fetchone()
            conn.execute(sql.SPOOL_MARK_APPLIED, {**ids, "version": 0})
            if row is None:
                log.info("spooled delete of session %r found nothing to delete", sid)
            return 0
        texts: builtins.list[str] = rec["texts"]
        locked = conn.execute(sql.LOCK_ROW, {"sid": sid}).fetchone()
        if locked is None:
            version = self._replay_create(conn, rec)
        else:
            version = self._replay_update(conn, rec, produced, int(locked[0]), int(locked[1]), texts)
        conn.execute(sql.SPOOL_MARK_APPLIED, {**ids, "version": version})
        return version

    def _replay_create(self, conn: psycopg.Connection[Any], rec: dict[str, Any]) -> int:
        sid = rec["session_id"]
        if not rec["full"]:
            log.warning("session %r vanished while its writes were spooled; recreating it from "
                        "the spooled messages only", sid)
        row = conn.execute(sql.CREATE_ROW_REPLAY, {
            "sid": sid, "data": rec["session_data"], "count": len(rec["texts"]), "meta": rec["metadata"],
            "expires_at": rec["expires_at"], "created_at": rec["created_at"],
        }).fetchone()
        assert row is not None
        _insert_messages(conn, sid, 0, rec["texts"])
        _write_members(conn, sid, rec["members_upsert"])
        return int(row[0])

    def _replay_update(self, conn: psycopg.Connection[Any], rec: dict[str, Any], produced: dict[str, int],
                       version: int, stored: int, texts: builtins.list[str]) -> int:
        sid = rec["session_id"]
        expected = rec["base_version"]
        if rec["prev"] is not None:
            expected = produced.get(rec["prev"])
            if expected is None:  # replayed by an earlier pass (or another process)
                found = conn.execute(sql.SPOOL_ALREADY_APPLIED, {"sid": sid, "wid": rec["prev"]}).fetchone()
                expected = int(found[0]) if found is not None else None
        if rec["uncertain"] and expected is not None and version == expected + 1 and texts:
            found = conn.execute(sql.TAIL_MATCHES, {"sid": sid, "base": rec["base_count"], "msgs": texts})
            row = found.fetchone()
            if row is not None and row[0] == len(texts):
                return version  # the write landed before the connection died
        if rec["full"]:
            diff = conn.execute(sql.FIRST_DIFFERENCE, {"sid": sid, "msgs": texts}).fetchone()
            k = len(texts) if diff is None or diff[0] is None else int(diff[0])
            if expected == version:
                # Nobody wrote since the state the writer saw: its list is the session's history
                # (an edited or shortened history included), exactly as a save would have made it.
                base, new = k, texts[k:]
                conn.execute(sql.CUT_MESSAGES, {"sid": sid, "base": base})
            else:
                base, new = (stored, texts[stored:]) if k >= stored else (stored, texts[k:])
        elif expected == version and stored == rec.get("prev_count", stored):
            base, new = rec["base_count"], texts
            if rec["rewrite"]:
                conn.execute(sql.CUT_MESSAGES, {"sid": sid, "base": base})
        else:
            # Others wrote meanwhile, or an earlier write of this chain was merged after theirs:
            # keep what is stored, append ours.
            base, new = stored, texts
        _insert_messages(conn, sid, base, new)
        if rec["members_full"]:
            _write_members(conn, sid, rec["members_upsert"], keep=list(rec["members_upsert"]))
        else:
            _write_members(conn, sid, rec["members_upsert"], delete=rec["members_delete"])
        row = conn.execute(sql.UPDATE_ROW_REPLAY, {
            "sid": sid, "data": rec["session_data"], "count": base + len(new), "meta": rec["metadata"],
            "set_expiry": rec["expires_at"] is not None, "expires_at": rec["expires_at"],
        }).fetchone()
        assert row is not None
        return int(row[0])

    def probe(self) -> bool:
        """Can a brand-new connection reach the server? (Bypasses the pool and its back-off.)"""
        if self._conninfo is None:
            return False
        try:
            with psycopg.connect(self._conninfo, autocommit=True,
                                 connect_timeout=max(2, math.ceil(self.config.connect_timeout_s))) as conn, \
                    self._deadlines.guard(conn, self._op_deadline):
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def cache_entry(self, session_id: str) -> CacheEntry | None:
        return self._cache.get(session_id)

    def forget(self, session_id: str) -> None:
        """Drop what this process remembers of a session (the next save takes the locked path)."""
        self._cache.drop(session_id)

    def describe(self) -> str:
        return redact_conninfo(self._conninfo) if self._conninfo else "embedded (not started)"


def _fetch_one(statement: str, params: dict[str, Any], conn: psycopg.Connection[Any], _: int) -> Any:
    return conn.execute(statement, params).fetchone()  # type: ignore[arg-type]


_STATEMENTS: dict[tuple[int, bool], str] = {}


def _append(plan: Plan) -> tuple[str, dict[str, Any]]:
    texts = plan.new_texts
    members = bool(plan.upsert_members or plan.delete_members)
    shape = (len(texts) if len(texts) <= sql.APPEND_VALUES_MAX else -1, members)
    statement = _STATEMENTS.get(shape)
    if statement is None:
        statement = _STATEMENTS[shape] = sql.append_statement(len(texts), members)
    params = _row_params(plan)
    params["expected"] = plan.expected_version
    params["base"] = plan.base_count
    if len(texts) <= sql.APPEND_VALUES_MAX:
        for i, text in enumerate(texts):
            params[f"m{i}"] = text
    else:
        params["msgs"] = texts
    if members:
        params.update(mk=list(plan.upsert_members), mv=list(plan.upsert_members.values()),
                      **{"del": plan.delete_members})
    return statement, params


def _row_params(plan: Plan) -> dict[str, Any]:
    return {"sid": plan.session_id, "data": plan.session_data_text, "meta": plan.metadata_text,
            "hours": plan.expires_in_hours}


def _insert_messages(conn: psycopg.Connection[Any], sid: str, base: int, texts: list[str]) -> None:
    if texts:
        conn.execute(sql.INSERT_MESSAGES, {"sid": sid, "base": base, "msgs": texts})


def _write_members(conn: psycopg.Connection[Any], sid: str, upsert: dict[str, str],
                   keep: list[str] | None = None, delete: list[str] | None = None) -> None:
    if upsert:
        conn.execute(sql.UPSERT_MEMBERS, {"sid": sid, "mk": list(upsert), "mv": list(upsert.values())})
    if keep is not None:
        conn.execute(sql.DELETE_OTHER_MEMBERS, {"sid": sid, "keep": keep})
    elif delete:
        conn.execute(sql.DELETE_MEMBERS, {"sid": sid, "names": delete})


def _info(row: tuple[Any, ...]) -> SessionInfo:
    metadata = codec.loads(row[1]) if row[1] is not None else {}
    return SessionInfo(
        session_id=row[0], metadata=metadata if isinstance(metadata, dict) else {}, created_at=row[2],
        last_updated=row[3], expires_at=row[4], version=row[5], is_active=bool(row[6]),
        message_count=int(row[7]),
    )


_timestamp = datetime.fromisoformat


def _info_from_json(item: list[Any]) -> SessionInfo:
    """One element of a JSON listing: [id, metadata, created, updated, expires, version, active, count]."""
    metadata = item[1]
    return SessionInfo(
        session_id=item[0], metadata=metadata if isinstance(metadata, dict) else {},
        created_at=_timestamp(item[2]), last_updated=_timestamp(item[3]),
        expires_at=_timestamp(item[4]) if item[4] is not None else None, version=item[5],
        is_active=item[6], message_count=item[7],
    )


def _lock_key(session_id: str) -> int:
    # Computed client-side so taking the lock is one statement; any stable 64-bit hash works.
    digest = hashlib.blake2b(session_id.encode("utf-8"), digest_size=8, person=b"isotope").digest()
    return int.from_bytes(digest, "big", signed=True)


def _connection_died(exc: BaseException | None) -> bool:
    """True for errors where the connection broke (worth one retry), not for timeouts."""
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable | PoolTimeout):
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    return text[0] if text else type(exc).__name__


def _safe_params(conninfo: str | None) -> dict[str, Any]:
    try:
        params = conninfo_to_dict(conninfo or "")
    except Exception:
        return {}
    params.pop("password", None)
    return params
