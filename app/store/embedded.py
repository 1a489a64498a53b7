"""The embedded PostgreSQL: a real PostgreSQL 16 from the ``pgserver`` wheel, under the data dir.

``pgserver`` does the hard parts: ``initdb`` on first use, ``pg_ctl start`` on a Unix socket
inside the data directory (no TCP port to collide on), an inter-process lock plus a list of the
processes using the cluster, so several Isotope processes on one data dir share one server and
the last one to exit stops it. PostgreSQL refuses to run as root; when we are root, pgserver
creates an unprivileged system user ``pgserver``, hands it the cluster directory and runs the
server as that user (it also makes the directories above the cluster traversable by it).

The data survives restarts: only the server process stops, never the cluster directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from app.errors import StoreUnavailable

log = logging.getLogger("isotope.store.embedded")

DATABASE = "isotope"

# pgserver keeps one handle per cluster and process, and stops the server when the process
# releases it; several managers in one process must release it only when the last one closes.
_users: dict[Path, int] = {}
_users_lock = threading.Lock()


def _pgserver() -> Any:
    # pgserver computes a runtime directory at import time and warns when XDG_RUNTIME_DIR is
    # unset (containers, CI); give it a private one instead of the warning.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"isotope-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``<data_dir>/postgres``, started on demand.

    ``cleanup`` is pgserver's mode: ``"stop"`` (the last process using it stops the server,
    the data stays), ``None`` (leave it running) or ``"delete"`` (throwaway clusters in tests).
    """

    def __init__(self, data_dir: Path, cleanup: str | None = "stop", database: str = DATABASE) -> None:
        self.pgdata = Path(data_dir).resolve() / "postgres"
        self.cleanup = cleanup
        self.database = database
        self._server: Any = None
        self.start_seconds: float | None = None
        self.initialised: bool = False

    def start(self) -> str:
        """Start (or join) the cluster; return a libpq URL for Isotope's database."""
        if self._server is not None:
            return self.url()
        started = time.perf_counter()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.initialised = not (self.pgdata / "PG_VERSION").exists()
        try:
            with _users_lock:
                self._server = _pgserver().get_server(self.pgdata, cleanup_mode=self.cleanup)
                _users[self.pgdata] = _users.get(self.pgdata, 0) + 1
        except Exception as exc:
            log_file = self.pgdata / "log"
            raise StoreUnavailable(
                f"the embedded PostgreSQL in {self.pgdata} did not start ({type(exc).__name__}: {exc}); "
                f"see {log_file}"
            ) from exc
        self._ensure_database()
        self.start_seconds = time.perf_counter() - started
        log.info(
            "embedded PostgreSQL ready in %.2f s (%s) at %s", self.start_seconds,
            "new cluster" if self.initialised else "existing cluster", self.pgdata,
        )
        return self.url()

    def url(self, database: str | None = None) -> str:
        if self._server is None:
            raise StoreUnavailable("the embedded PostgreSQL is not started")
        return str(self._server.get_uri(database or self.database))

    def admin_url(self) -> str:
        return self.url("postgres")

    def _ensure_database(self) -> None:
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists:
                return
            # Another process may create it first.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def stop(self) -> None:
        """Release this process's handle (pgserver stops the server if it was the last)."""
        server, self._server = self._server, None
        if server is None:
            return
        with _users_lock:
            _users[self.pgdata] -= 1
            last = _users[self.pgdata] == 0
            if last:
                del _users[self.pgdata]
        if last and self.cleanup is not None:
            server.cleanup()
