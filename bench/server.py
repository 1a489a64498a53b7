"""The PostgreSQL every system runs on: a private throwaway one, or the server of ``--database-url``.

Each system gets its own fresh database per repetition (CREATE DATABASE), so no system sees
another's tables, bloat or statistics; the WAL, the checkpointer and the disk are shared, which
is why the systems run one after another and never at the same time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

SERVER_FACTS = """
SELECT current_setting('server_version') AS version,
       current_setting('shared_buffers') AS shared_buffers,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('fsync') AS fsync,
       current_setting('full_page_writes') AS full_page_writes,
       current_setting('wal_compression') AS wal_compression,
       current_setting('default_toast_compression') AS toast_compression,
       current_setting('autovacuum') AS autovacuum,
       current_setting('max_connections')::int AS max_connections
"""
DATA_DIRECTORY = "SELECT current_setting('data_directory')"


def with_database(conninfo: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return make_conninfo(conninfo, dbname=dbname)


@contextlib.contextmanager
def embedded_server() -> Iterator[tuple[str, str, str]]:
    """Start a private PostgreSQL from the pgserver wheel; yield (URL, data dir, bin dir); delete it."""
    runtime = tempfile.mkdtemp(prefix="isobench-run-")
    # pgserver asks platformdirs for a runtime dir at import time and warns when
    # XDG_RUNTIME_DIR is unset; a private one also keeps its lock file away from other users.
    os.environ.setdefault("XDG_RUNTIME_DIR", runtime)
    from pgserver._commands import POSTGRES_BIN_PATH  # noqa: PLC0415 - imported late on purpose, see above
    from pgserver.postgres_server import get_server  # noqa: PLC0415

    pgdata = tempfile.mkdtemp(prefix="isobench-")  # short path: the socket lives in it
    server = get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri(), pgdata, str(POSTGRES_BIN_PATH)
    finally:
        server.cleanup()
        shutil.rmtree(runtime, ignore_errors=True)


class Cluster:
    """Administrative access to the server: facts, and one throwaway database per system."""

    def __init__(self, url: str, data_directory: str | None = None) -> None:
        self.url = url
        self._prefix = f"isobench_{secrets.token_hex(3)}_"
        self._created: list[str] = []
        self.data_directory = data_directory

    def facts(self) -> dict[str, Any]:
        with psycopg.connect(self.url, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(SERVER_FACTS).fetchone()
            return dict(row or {})

    def create_database(self, system: str) -> str:
        """A fresh, empty database for ``system``; returns its connection string."""
        name = self._prefix + system
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._created.append(name)
        return with_database(self.url, name)

    def drop_database(self, conninfo: str) -> None:
        name = str(conninfo_to_dict(conninfo)["dbname"])
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self._created:
            self._created.remove(name)

    def drop_all(self) -> None:
        """Drop whatever this run created and did not drop yet (after a failure)."""
        for name in list(self._created):
            with contextlib.suppress(psycopg.Error):
                self.drop_database(with_database(self.url, name))
