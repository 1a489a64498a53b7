"""The per-session turn lock: a PostgreSQL advisory lock, held on one pool connection per turn.

This is the only module that knows how a session is locked. A turn :meth:`SessionLocks.hold`\\ s
its session (re-entrant within a thread); saves inside the turn find the lock's connection with
:meth:`SessionLocks.connection` and run on it. A replayed spool record takes the same lock for
its transaction only, and only if free (:func:`try_for_transaction`): a spooled write merged
under a running turn would be cut away by that turn's save.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from app.config import StoreConfig
from app.errors import SessionBusy, StoreUnavailable
from app.store.postgres import sql
from app.store.postgres.connections import Connection, Connections, connection_died, first_line, one

log = logging.getLogger("isotope.store.postgres")


class SessionLocks:
    """The sessions this process's threads hold, each with the connection that holds it."""

    def __init__(self, connections: Connections, config: StoreConfig) -> None:
        self._connections = connections
        self._config = config
        self._held = threading.local()

    def _conns(self) -> dict[str, Connection]:
        held: dict[str, Connection] = self._held.__dict__.setdefault("conns", {})
        return held

    def holds(self, session_id: str) -> bool:
        """True inside this thread's :meth:`hold` of the session."""
        return session_id in self._conns()

    def connection(self, session_id: str) -> Connection | None:
        """The connection holding the session's lock for this thread, if any (saves reuse it)."""
        return self._conns().get(session_id)

    @contextmanager
    def hold(self, session_id: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the session's lock (waiting up to ``timeout``, else ``store.lock_timeout_s``)."""
        wait = self._config.lock_timeout_s if timeout is None else timeout
        held = self._conns()
        if session_id in held:  # re-entrant within a thread
            yield
            return
        with self._connections.translated("session lock"), self._locked_connection(session_id, wait) as conn:
            held[session_id] = conn
            try:
                yield
            finally:
                held.pop(session_id, None)
                if not conn.closed:
                    # If the backend is gone, its advisory locks went with it.
                    with contextlib.suppress(psycopg.Error, StoreUnavailable), \
                            self._connections.bounded(conn, self._connections.op_deadline):
                        conn.execute(sql.SESSION_UNLOCK, {"key": lock_key(session_id)})

    @contextmanager
    def _locked_connection(self, session_id: str, wait: float) -> Iterator[Connection]:
        """A pool connection holding the session's lock; taken again on a new connection if it
        turns out dead (a terminated backend, a restarted server), as in Connections.run."""
        for attempt in (1, 2, 3):
            with self._connections.connection(guarded=False) as conn:
                try:
                    # Only taking the lock is bounded here: the connection is then held for the
                    # whole turn, and the saves inside it are bounded one by one.
                    self._take(conn, session_id, wait)
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    if attempt == 3 or not connection_died(exc):
                        raise
                    log.info("retrying the session lock on a new connection after: %s", first_line(exc))
                else:
                    yield conn
                    return
            self._connections.drop_dead_connections()

    def _take(self, conn: Connection, session_id: str, wait: float) -> None:
        """Wait for the session's lock in slices of ``connect_timeout_s``, each one bounded: a
        legitimate wait (another turn) and a frozen server look alike from here until a slice
        ends, with LockNotAvailable from a live server or the deadline's shutdown from a dead one."""
        deadline = time.monotonic() + wait
        per_slice = max(1.0, self._config.connect_timeout_s)
        while True:
            step = max(0.001, min(per_slice, deadline - time.monotonic()))
            with self._connections.bounded(conn, step + self._connections.op_deadline):
                conn.execute(sql.SET_LOCK_TIMEOUT, (f"{max(1, int(step * 1000))}ms",))
                try:
                    conn.execute(sql.SESSION_LOCK, {"key": lock_key(session_id)})
                    return
                except psycopg.errors.LockNotAvailable as exc:
                    if time.monotonic() >= deadline - 0.001:
                        raise SessionBusy(
                            f"session {session_id!r} is busy in another turn (waited {wait:g} s); retry"
                        ) from exc
                finally:
                    if not conn.closed:
                        conn.execute(sql.RESET_LOCK_TIMEOUT)


def try_for_transaction(conn: Connection, session_id: str) -> bool:
    """Take the session's lock until the current transaction ends, if no turn holds it."""
    row = one(conn, sql.TRY_SESSION_XACT_LOCK, {"key": lock_key(session_id)})
    return row is not None and bool(row["locked"])


def lock_key(session_id: str) -> int:
    # Computed client-side so taking the lock is one statement; any stable 64-bit hash works.
    digest = hashlib.blake2b(session_id.encode("utf-8"), digest_size=8, person=b"isotope").digest()
    return int.from_bytes(digest, "big", signed=True)
