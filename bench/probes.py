"""Server-side counters read around a timed phase, on the harness's own connection.

* WAL bytes: ``pg_current_wal_lsn()`` before and after (cluster-wide; only one system runs at a time).
* Write transactions: the next transaction id, ``pg_snapshot_xmax(pg_current_snapshot())``.
  PostgreSQL assigns an xid only to a transaction that writes, and each such commit is one WAL
  flush, so the delta counts durable commits and ignores read-only transactions (which
  ``pg_stat_database.xact_commit`` would count, and which it reports only after a stats flush).
  Autovacuum/autoanalyze writing pg_statistic would show up as a fraction above an integer.
* Growth: sum of ``pg_total_relation_size`` (heap + indexes + TOAST) over the database's own
  tables; every system has a database to itself, so that is exactly the system's tables.
* Full-page images, when the server lets us see them: ``pg_walinspect`` if it can be created,
  else ``pg_waldump --stats`` on the data directory of the embedded server.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

POSITION = """
SELECT pg_current_wal_lsn()::text AS lsn,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker')::int
"""
RELATION_BYTES = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
"""
# The redo point moves when any checkpoint (ours, timed or requested) starts; a checkpoint
# inside a timed window brings full-page images into the WAL figure, so such cells are flagged.
REDO_POINT = "SELECT redo_lsn::text FROM pg_control_checkpoint()"
WAL_DIFF = "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint"
CHECKPOINT = "CHECKPOINT"
CREATE_WALINSPECT = "CREATE EXTENSION IF NOT EXISTS pg_walinspect"
# pg_get_wal_stats refuses an end past the flush position; the write position can be ahead of it.
WALINSPECT_FPI = """
SELECT coalesce(sum(fpi_size), 0)::bigint
FROM pg_get_wal_stats(%s::pg_lsn, least(%s::pg_lsn, pg_current_wal_flush_lsn()))
"""
WALDUMP_TOTAL = re.compile(r"^Total\s+\d+\s+\d+\s+\[[^\]]*\]\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Position:
    lsn: str
    next_xid: int
    relation_bytes: int
    redo_lsn: str | None
    autovacuum_workers: int  # running at this moment (a sample, not a count of runs)


class Probe:
    """One autocommit connection to a system's database, used only between timed operations."""

    def __init__(self, conninfo: str, data_directory: str | None, waldump: str | None) -> None:
        self._conn = psycopg.connect(conninfo, autocommit=True)
        self._data_directory = data_directory
        self._waldump = waldump
        self.fpi_source = self._choose_fpi_source()
        self.checkpoint_allowed = True

    def close(self) -> None:
        self._conn.close()

    def checkpoint(self) -> None:
        """Flush dirty pages so the next phase's WAL is steady state, not full-page images."""
        if not self.checkpoint_allowed:
            return
        try:
            self._conn.execute(CHECKPOINT)
        except psycopg.errors.InsufficientPrivilege:
            self.checkpoint_allowed = False  # reported in the run's facts

    def position(self) -> Position:
        row = self._conn.execute(POSITION).fetchone()
        size = self._conn.execute(RELATION_BYTES).fetchone()
        assert row is not None and size is not None
        return Position(row[0], int(row[1]), int(size[0]), self._redo_lsn(), int(row[2]))

    def _redo_lsn(self) -> str | None:
        try:
            row = self._conn.execute(REDO_POINT).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return None
        return row[0] if row else None

    def wal_bytes(self, start: Position, end: Position) -> int:
        row = self._conn.execute(WAL_DIFF, (end.lsn, start.lsn)).fetchone()
        assert row is not None
        return int(row[0])

    def fpi_bytes(self, start: Position, end: Position) -> int | None:
        """Full-page-image bytes in the WAL between two positions, or None if not visible here."""
        if self.fpi_source == "pg_walinspect":
            row = self._conn.execute(WALINSPECT_FPI, (start.lsn, end.lsn)).fetchone()
            return int(row[0]) if row else None
        if self.fpi_source == "pg_waldump":
            return self._waldump_fpi(start.lsn, end.lsn)
        return None

    def execute(self, statement: str) -> None:
        self._conn.execute(statement)

    def sql_rows(self, query: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        """Run an ad-hoc listing query (no transaction left open: autocommit)."""
        return self._conn.execute(query, params).fetchall()

    def _choose_fpi_source(self) -> str | None:
        with contextlib.suppress(psycopg.Error):
            self._conn.execute(CREATE_WALINSPECT)
            return "pg_walinspect"
        if self._waldump and self._data_directory and Path(self._data_directory, "pg_wal").is_dir():
            return "pg_waldump"
        return None

    def _waldump_fpi(self, start: str, end: str) -> int | None:
        assert self._waldump is not None and self._data_directory is not None
        if start == end:
            return 0
        wal_dir = str(Path(self._data_directory, "pg_wal"))
        args = [self._waldump, "--stats", "-p", wal_dir, "-s", start, "-e", end]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        match = WALDUMP_TOTAL.search(done.stdout)
        return int(match.group(1)) if match else None


def find_waldump(server_version: str, bin_dir: str | None) -> str | None:
    """A pg_waldump whose major version matches the server (WAL formats differ between majors)."""
    major = server_version.split(".")[0].split()[0]
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/pg_waldump")]
    if bin_dir:
        candidates.insert(0, Path(bin_dir) / "pg_waldump")
    on_path = shutil.which("pg_waldump")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.exists() and _major_of(path) == major:
            return str(path)
    return None


def _major_of(binary: Path) -> str | None:
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"(\d+)(?:\.\d+)?", done.stdout)
    return match.group(1) if match else None
