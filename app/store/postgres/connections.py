"""The pool, and running a statement on it: driver errors become domain errors, every operation
has a client-side deadline, and a connection that died under a statement is retried on a new one.

Driver errors are translated once, here (:meth:`Connections.translated`): unreachable server ->
:class:`StoreUnavailable`, saturated pool -> :class:`StoreBusy`, lock timeout ->
:class:`SessionBusy`, rejected data -> :class:`InvalidInput`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.abc import Params
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from app.config import StoreConfig
from app.errors import InvalidInput, IsotopeError, SessionBusy, StoreBusy, StoreNotOpen, StoreUnavailable
from app.store.embedded import EmbeddedPostgres
from app.store.postgres import sql
from app.store.postgres.deadlines import DEADLINES, Frozen
from app.store.schema import migrate

log = logging.getLogger("isotope.store.postgres")
T = TypeVar("T")
Connection = psycopg.Connection[Any]
Row = dict[str, Any]

# psycopg_pool logs every failed reconnection attempt at WARNING; the outage store already
# reports an outage once, with what it does about it. Keep the pool's retries out of terminals.
if logging.getLogger("psycopg.pool").level == logging.NOTSET:
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def one(conn: Connection, query: LiteralString, params: Params | None = None) -> Row | None:
    """The first row of ``query``, by column name (None when there is none)."""
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchone()


def every(conn: Connection, query: LiteralString, params: Params | None = None) -> list[Row]:
    """Every row of ``query``, by column name."""
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


class Connections:
    """The store's pool (or the embedded server's), opened by :meth:`open`; nothing before it."""

    def __init__(self, conninfo: str | None, config: StoreConfig, data_dir: Path | None = None,
                 embedded_cleanup: str | None = "stop") -> None:
        self.conninfo = conninfo
        self.embedded = EmbeddedPostgres(data_dir or Path("data"), embedded_cleanup) if conninfo is None else None
        self.config = config
        self._pool: ConnectionPool[Connection] | None = None
        self._pool_lock = threading.Lock()
        # Each operation's client-side bound: the server's statement timeout, plus the time a
        # fresh connection may take.
        self.op_deadline = config.statement_timeout_s + config.connect_timeout_s
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        if self._pool is not None:
            return
        if self.embedded is not None:
            self.conninfo = self.embedded.start()
        self._pool = self._new_pool()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=2.0)
        if self.embedded is not None:
            self.embedded.stop()

    def migrate(self) -> list[int]:
        """Apply missing migrations now; return the versions applied."""
        with self.translated("migrate"), self.pool().connection(timeout=self.config.connect_timeout_s) as conn:
            applied = migrate(conn)
            self._schema_ready = True
            return applied

    def reset_pool(self) -> None:
        """Swap in a fresh pool (after an outage, psycopg_pool's reconnect back-off can lag)."""
        with self._pool_lock:
            old, self._pool = self._pool, self._new_pool()
        if old is not None:
            threading.Thread(target=old.close, kwargs={"timeout": 5.0}, daemon=True).start()

    def probe(self) -> bool:
        """Can a brand-new connection reach the server? (Bypasses the pool and its back-off.)"""
        if self.conninfo is None:
            return False
        try:
            with psycopg.connect(self.conninfo, autocommit=True,
                                 connect_timeout=max(2, math.ceil(self.config.connect_timeout_s))) as conn, \
                    DEADLINES.guard(conn, self.op_deadline):
                conn.execute(sql.PROBE)
            return True
        except psycopg.Error:
            return False

    def _new_pool(self) -> ConnectionPool[Connection]:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": cfg.prepare_threshold,
            "connect_timeout": max(2, math.ceil(cfg.connect_timeout_s)),
            "application_name": "isotope",
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3, "keepalives_count": 3,
            "tcp_user_timeout": int(cfg.statement_timeout_s * 1000),
        }
        pool: ConnectionPool[Connection] = ConnectionPool(
            self.conninfo or "", min_size=cfg.pool_min_size, max_size=cfg.pool_max_size,
            kwargs=kwargs, configure=self._configure, open=False, name="isotope",
            timeout=cfg.connect_timeout_s, reconnect_timeout=3600.0,
        )
        pool.open(wait=False)
        return pool

    def _configure(self, conn: Connection) -> None:
        cfg = self.config
        conn.execute(sql.CONFIGURE, (f"{int(cfg.statement_timeout_s * 1000)}ms",
                                     f"{int(cfg.statement_timeout_s * 3000)}ms"))

    def pool(self) -> ConnectionPool[Connection]:
        if self._pool is None:
            raise StoreNotOpen("the PostgreSQL session store is not open; call open() first")
        return self._pool

    def _ensure_schema(self, conn: Connection) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                migrate(conn)
                self._schema_ready = True

    # ------------------------------------------------------------------ running statements

    @contextmanager
    def translated(self, what: str) -> Iterator[None]:
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
            raise StoreUnavailable(f"PostgreSQL is unreachable ({what}): {first_line(exc)}") from exc
        except psycopg.DataError as exc:
            raise InvalidInput("session_data", f"PostgreSQL rejected the data: {first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise IsotopeError(f"PostgreSQL failed during {what}: {first_line(exc)}") from exc

    def _pool_saturated(self) -> bool:
        """A checkout timed out because every connection is lent out (load), not because none
        can be made (an outage): the pool is at its maximum size with nothing idle."""
        pool = self._pool
        if pool is None:
            return False
        stats = pool.get_stats()
        return stats.get("pool_size", 0) >= stats.get("pool_max", 0) and stats.get("pool_available", 0) == 0

    @contextmanager
    def connection(self, guarded: bool = True) -> Iterator[Connection]:
        """A pool connection (its schema checked); bounded by the operation deadline if ``guarded``."""
        with self.pool().connection(timeout=self.config.connect_timeout_s) as conn:
            if not guarded:
                self._ensure_schema(conn)
                yield conn
                return
            with self.bounded(conn, self.op_deadline):
                self._ensure_schema(conn)
                yield conn

    @contextmanager
    def bounded(self, conn: Connection, seconds: float) -> Iterator[None]:
        """Fail what runs on ``conn`` if the server has not answered within ``seconds``."""
        with DEADLINES.guard(conn, seconds) as guard:
            try:
                yield
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if not guard.fired:
                    raise
                # Not a dead connection to retry at once: the server itself does not answer.
                raise StoreUnavailable(
                    f"PostgreSQL did not answer within {seconds:g} s (store.statement_timeout_s + "
                    "store.connect_timeout_s); it may be frozen or overloaded"
                ) from Frozen(str(exc))

    def run(self, what: str, fn: Callable[[Connection, int], T], held: Connection | None = None) -> T:
        """Run ``fn`` on a connection (first on ``held``, a session lock's, if given); again on a
        fresh one (twice at most) if it died under us.

        Two retries, not one: pg_terminate_backend and a server restart kill every connection,
        and a backend signalled a moment ago still passes the pool's check before it exits."""
        for attempt in (1, 2, 3):
            try:
                with self.translated(what), self._attempt(held if attempt == 1 else None) as conn:
                    return fn(conn, attempt)
            except StoreUnavailable as exc:
                if attempt == 3 or not connection_died(exc.__cause__):
                    raise
                log.info("retrying %s on a new connection after: %s", what, first_line(exc.__cause__))
                self.drop_dead_connections()
        raise AssertionError("unreachable")

    @contextmanager
    def _attempt(self, held: Connection | None) -> Iterator[Connection]:
        if held is None:
            with self.connection() as conn:
                yield conn
        else:
            with self.bounded(held, self.op_deadline):
                yield held

    def drop_dead_connections(self) -> None:
        """After one connection died, test the idle ones (a server restart or a mass
        pg_terminate_backend kills them all) so the retry does not get another dead one."""
        pool = self._pool
        if pool is not None:
            with contextlib.suppress(psycopg.Error, PoolClosed):
                pool.check()


def connection_died(exc: BaseException | None) -> bool:
    """True for errors where the connection broke (worth one retry), not for timeouts."""
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable | PoolTimeout):
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    return text[0] if text else type(exc).__name__


def safe_params(conninfo: str | None) -> dict[str, Any]:
    """The connection parameters without the password (for reports)."""
    try:
        params = conninfo_to_dict(conninfo or "")
    except Exception:
        return {}
    params.pop("password", None)
    return params
