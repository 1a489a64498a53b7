"""LangGraph checkpoints in PostgreSQL: the SQL and the store behind :mod:`app.adapters.langgraph`.

A LangGraph thread is an Isotope session: every step creates or touches its ``isotope_sessions``
row, and deleting that row deletes the thread's rows (a trigger, migration 7), so a thread is
listed, expired, hard-deleted and counted like any session. The adapter serialises; this module
only moves rows, and is (with :mod:`app.store.postgres`) the only place importing psycopg for it.

Cost per step is flat in history because nothing is rewritten:

* a checkpoint row, plus one ``isotope_lg_blobs`` row per non-list channel whose version changed;
* a *list* channel (``messages``) keeps its elements in ``isotope_lg_items``, one row per element,
  written once; the checkpoint row's ``lists`` describes each list by a short run of segments
  ``[[epoch, start, end], ...]`` (positions ``start..end-1`` of that epoch). Appending extends
  the last segment; an edit at position k starts a new epoch from k. The items' primary key makes
  a stale append (another writer, or a fork from an older checkpoint, took those positions) fail
  instead of overwrite: :class:`EpochTaken`, and the adapter retries in a fresh epoch;
* a step is one statement: the session row, the blobs, the items and the checkpoint commit
  together (one round trip, one WAL flush), and ``put_writes`` is one more;
* inserts are plain first (``ON CONFLICT`` costs a WAL record per row even when nothing
  conflicts); only a statement that hits a duplicate runs again in its tolerant form.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from app.errors import InvalidInput, StoreNotOpen, StoreUnavailable
from app.store.postgres import sql as session_sql
from app.store.schema import migrate

log = logging.getLogger("isotope.store.checkpoints")

LIST_TYPE = "isotope.list"  # blob type of a list channel's version (its value is in items)
SESSION_DATA = '{"framework": "langgraph"}'

# The session row: created on a thread's first step, touched (recency, expiry, reactivation) once
# per run. version moves so Isotope writers of the same id see a change.
_TOUCH = """
s AS (
    INSERT INTO isotope_sessions AS t (session_id, session_data, metadata, expires_at)
    VALUES (%(tid)s, %(sdata)s::jsonb, '{"framework": "langgraph"}'::jsonb,
            CASE WHEN %(hours)s::float8 IS NULL THEN NULL ELSE now() + %(hours)s::float8 * interval '1 hour' END)
    ON CONFLICT (session_id) DO UPDATE
       SET last_updated = now(), version = t.version + 1, is_active = TRUE,
           expires_at = CASE WHEN %(hours)s::float8 IS NULL THEN t.expires_at
                             ELSE now() + %(hours)s::float8 * interval '1 hour' END
)"""

# The other steps only make sure the row exists: when it does, an index probe and no WAL.
_ENSURE = """
s AS (
    INSERT INTO isotope_sessions (session_id, session_data, metadata)
    VALUES (%(tid)s, %(sdata)s::jsonb, '{"framework": "langgraph"}'::jsonb)
    ON CONFLICT (session_id) DO NOTHING
)"""

_BLOBS = """
b AS (
    INSERT INTO isotope_lg_blobs (session_id, checkpoint_ns, channel, version, type, blob)
    SELECT %(tid)s, %(ns)s, u.ch, u.ver, u.ty, u.bl
      FROM unnest(%(b_ch)b::text[], %(b_ver)b::text[], %(b_ty)b::text[], %(b_bl)b::bytea[]) AS u(ch, ver, ty, bl)
    {conflict}
)"""

# Always plain: a position already taken in this epoch must fail the step (EpochTaken).
_ITEMS = """
i AS (
    INSERT INTO isotope_lg_items (session_id, checkpoint_ns, channel, epoch, pos, type, blob)
    SELECT %(tid)s, %(ns)s, u.ch, u.ep, u.pos, u.ty, u.bl
      FROM unnest(%(i_ch)b::text[], %(i_ep)b::int4[], %(i_pos)b::int4[], %(i_ty)b::text[], %(i_bl)b::bytea[])
           AS u(ch, ep, pos, ty, bl)
)"""

_CHECKPOINT = """
INSERT INTO isotope_lg_checkpoints (session_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                                    checkpoint, metadata, lists)
VALUES (%(tid)s, %(ns)s, %(cid)s, %(parent)s, %(cp)s, %(md)s, %(lists)s)
{conflict}"""
_CHECKPOINT_AGAIN = """ON CONFLICT (session_id, checkpoint_ns, checkpoint_id)
DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata, lists = EXCLUDED.lists"""
_BLOB_AGAIN = "ON CONFLICT (session_id, checkpoint_ns, channel, version) DO NOTHING"

_WRITES = """
WITH s AS (
    INSERT INTO isotope_sessions (session_id, session_data, metadata)
    VALUES (%(tid)s, %(sdata)s::jsonb, '{"framework": "langgraph"}'::jsonb)
    ON CONFLICT (session_id) DO NOTHING
)
INSERT INTO isotope_lg_writes (session_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
SELECT %(tid)s, %(ns)s, %(cid)s, %(task)s, %(path)s, u.idx, u.ch, u.ty, u.bl
  FROM unnest(%(w_idx)b::int4[], %(w_ch)b::text[], %(w_ty)b::text[], %(w_bl)b::bytea[]) AS u(idx, ch, ty, bl)
"""
# Writes can commit before their checkpoint (LangGraph saves both in the background), so they
# create the session row too.
INSERT_WRITES = _WRITES
INSERT_WRITES_AGAIN = _WRITES + "ON CONFLICT (session_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING"
UPSERT_WRITES_AGAIN = _WRITES + """ON CONFLICT (session_id, checkpoint_ns, checkpoint_id, task_id, idx)
DO UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob"""
ITEMS_KEY = "isotope_lg_items_pkey"


def put_statement(touch: bool, blobs: bool, items: bool, again: bool) -> str:
    """The one statement of a step, for its shape; ``again`` tolerates rows that already exist."""
    ctes = [_TOUCH if touch else _ENSURE]
    if blobs:
        ctes.append(_BLOBS.format(conflict=_BLOB_AGAIN if again else ""))
    if items:
        ctes.append(_ITEMS)
    return "WITH " + ",".join(ctes) + _CHECKPOINT.format(conflict=_CHECKPOINT_AGAIN if again else "")


_LIVE = """EXISTS (SELECT FROM isotope_sessions s WHERE s.session_id = c.session_id AND s.is_active
                  AND (s.expires_at IS NULL OR s.expires_at > now()))"""

# A checkpoint with its blobs, its list channels' items (in order) and its pending writes: one
# query, one round trip, however long the history. A list whose segments the caller already holds
# (%(known)s: {channel: segments}) is not sent again.
_SELECT = """
SELECT c.session_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint, c.metadata,
  c.lists::text,
  (SELECT array_agg(array[convert_to(b.channel, 'UTF8'), convert_to(b.type, 'UTF8'), b.blob])
     FROM jsonb_each_text(c.checkpoint -> 'channel_versions') v
     JOIN isotope_lg_blobs b ON b.session_id = c.session_id AND b.checkpoint_ns = c.checkpoint_ns
                            AND b.channel = v.key AND b.version = v.value) AS blobs,
  (SELECT array_agg(array[convert_to(l.key, 'UTF8'), convert_to(i.type, 'UTF8'), i.blob] ORDER BY l.key, i.pos)
     FROM jsonb_each(c.lists) l
     CROSS JOIN LATERAL jsonb_array_elements(l.value) seg
     JOIN isotope_lg_items i ON i.session_id = c.session_id AND i.checkpoint_ns = c.checkpoint_ns
                            AND i.channel = l.key AND i.epoch = (seg ->> 0)::int
                            AND i.pos >= (seg ->> 1)::int AND i.pos < (seg ->> 2)::int
    WHERE (%(known)s::jsonb -> l.key) IS DISTINCT FROM l.value) AS items,
  (SELECT array_agg(array[convert_to(w.task_id, 'UTF8'), convert_to(w.channel, 'UTF8'),
                          convert_to(w.type, 'UTF8'), w.blob, convert_to(w.task_path, 'UTF8'),
                          convert_to(w.idx::text, 'UTF8')])
     FROM isotope_lg_writes w
    WHERE w.session_id = c.session_id AND w.checkpoint_ns = c.checkpoint_ns
      AND w.checkpoint_id = c.checkpoint_id) AS writes
  FROM isotope_lg_checkpoints c
"""

GET_LATEST = _SELECT + f"""
 WHERE c.session_id = %(tid)s AND c.checkpoint_ns = %(ns)s AND {_LIVE}
 ORDER BY c.checkpoint_id DESC LIMIT 1"""
GET_ONE = _SELECT + f"""
 WHERE c.session_id = %(tid)s AND c.checkpoint_ns = %(ns)s AND c.checkpoint_id = %(cid)s AND {_LIVE}"""

# list(): fixed predicates, each either applied or skipped by its NULL parameter, so the
# statement text is one constant.
LIST = _SELECT + f"""
 WHERE (%(tid)s::text IS NULL OR c.session_id = %(tid)s)
   AND (%(ns)s::text IS NULL OR c.checkpoint_ns = %(ns)s)
   AND (%(cid)s::text IS NULL OR c.checkpoint_id = %(cid)s)
   AND (%(filter)s::jsonb IS NULL OR c.metadata @> %(filter)s::jsonb)
   AND (%(before)s::text IS NULL OR c.checkpoint_id < %(before)s)
   AND {_LIVE}
 ORDER BY c.checkpoint_id DESC
 LIMIT %(limit)s"""

COPY_THREAD = """
WITH src AS (
    SELECT expires_at FROM isotope_sessions WHERE session_id = %(src)s
), s AS (
    INSERT INTO isotope_sessions AS t (session_id, session_data, metadata, expires_at)
    SELECT %(dst)s, %(sdata)s::jsonb, '{"framework": "langgraph"}'::jsonb, src.expires_at FROM src
    ON CONFLICT (session_id) DO UPDATE SET last_updated = now(), version = t.version + 1, is_active = TRUE
), c AS (
    INSERT INTO isotope_lg_checkpoints (session_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                                        checkpoint, metadata, lists)
    SELECT %(dst)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata, lists
      FROM isotope_lg_checkpoints WHERE session_id = %(src)s
    ON CONFLICT DO NOTHING
), b AS (
    INSERT INTO isotope_lg_blobs (session_id, checkpoint_ns, channel, version, type, blob)
    SELECT %(dst)s, checkpoint_ns, channel, version, type, blob
      FROM isotope_lg_blobs WHERE session_id = %(src)s
    ON CONFLICT DO NOTHING
), i AS (
    INSERT INTO isotope_lg_items (session_id, checkpoint_ns, channel, epoch, pos, type, blob)
    SELECT %(dst)s, checkpoint_ns, channel, epoch, pos, type, blob
      FROM isotope_lg_items WHERE session_id = %(src)s
    ON CONFLICT DO NOTHING
)
INSERT INTO isotope_lg_writes (session_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob, task_path)
SELECT %(dst)s, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob, task_path
  FROM isotope_lg_writes WHERE session_id = %(src)s
ON CONFLICT DO NOTHING
"""
SOURCE_EXISTS = "SELECT EXISTS (SELECT FROM isotope_lg_checkpoints WHERE session_id = %(src)s)"

# keep_latest: per namespace the newest checkpoint stays (with its writes); everything no kept
# checkpoint references goes.
DELTA_THREADS = """
SELECT DISTINCT session_id FROM isotope_lg_checkpoints
 WHERE session_id = ANY(%(tids)s)
   AND (metadata ? 'counters_since_delta_snapshot' OR metadata ? 'delta_writes_versioned')
"""
PRUNE_OLD_CHECKPOINTS = """
WITH keep AS (
    SELECT DISTINCT ON (session_id, checkpoint_ns) session_id, checkpoint_ns, checkpoint_id
      FROM isotope_lg_checkpoints WHERE session_id = ANY(%(tids)s)
     ORDER BY session_id, checkpoint_ns, checkpoint_id DESC
), w AS (
    DELETE FROM isotope_lg_writes w WHERE w.session_id = ANY(%(tids)s)
       AND NOT EXISTS (SELECT FROM keep k WHERE k.session_id = w.session_id
                          AND k.checkpoint_ns = w.checkpoint_ns AND k.checkpoint_id = w.checkpoint_id)
), d AS (
    DELETE FROM isotope_lg_checkpoints c WHERE c.session_id = ANY(%(tids)s)
       AND NOT EXISTS (SELECT FROM keep k WHERE k.session_id = c.session_id
                          AND k.checkpoint_ns = c.checkpoint_ns AND k.checkpoint_id = c.checkpoint_id)
)
UPDATE isotope_lg_checkpoints c SET parent_checkpoint_id = NULL
  FROM keep k
 WHERE c.session_id = k.session_id AND c.checkpoint_ns = k.checkpoint_ns AND c.checkpoint_id = k.checkpoint_id
   AND c.parent_checkpoint_id IS NOT NULL
"""
# Runs after the checkpoints are gone (a separate statement: CTEs share one snapshot).
GC_BLOBS = """
DELETE FROM isotope_lg_blobs b WHERE b.session_id = ANY(%(tids)s)
   AND NOT EXISTS (SELECT FROM isotope_lg_checkpoints c
                    WHERE c.session_id = b.session_id AND c.checkpoint_ns = b.checkpoint_ns
                      AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)
"""
GC_ITEMS = """
DELETE FROM isotope_lg_items i WHERE i.session_id = ANY(%(tids)s)
   AND NOT EXISTS (SELECT FROM isotope_lg_checkpoints c
                     CROSS JOIN LATERAL jsonb_each(c.lists) l
                     CROSS JOIN LATERAL jsonb_array_elements(l.value) seg
                    WHERE c.session_id = i.session_id AND c.checkpoint_ns = i.checkpoint_ns
                      AND l.key = i.channel AND (seg ->> 0)::int = i.epoch
                      AND i.pos >= (seg ->> 1)::int AND i.pos < (seg ->> 2)::int)
"""
DELETE_RUNS = """
WITH d AS (
    DELETE FROM isotope_lg_checkpoints WHERE metadata ->> 'run_id' = ANY(%(runs)s)
    RETURNING session_id, checkpoint_ns, checkpoint_id
), w AS (
    DELETE FROM isotope_lg_writes w USING d
     WHERE w.session_id = d.session_id AND w.checkpoint_ns = d.checkpoint_ns AND w.checkpoint_id = d.checkpoint_id
)
SELECT DISTINCT session_id FROM d
"""


@dataclass
class StepRows:
    """Everything one checkpoint adds, serialised by the adapter."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    checkpoint: dict[str, Any]
    metadata: dict[str, Any]
    touch: bool
    expires_in_hours: float | None = None
    # (channel, version, type, blob)
    blobs: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    # list channel -> segments, for every list channel of the checkpoint
    lists: dict[str, list[list[int]]] = field(default_factory=dict)
    # new list elements: (channel, epoch, pos, type, blob)
    items: list[tuple[str, int, int, str, bytes]] = field(default_factory=list)


@dataclass
class CheckpointRow:
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    checkpoint: dict[str, Any]
    metadata: dict[str, Any]
    blobs: list[tuple[str, str, bytes | None]]
    lists: dict[str, list[list[int]]]
    items: list[tuple[str, str, bytes]]
    writes: list[tuple[str, str, str, bytes | None, str, int]]


class EpochTaken(Exception):
    """A list append hit positions another write already holds; re-plan in a fresh epoch."""


def _text(value: bytes | None) -> str:
    return value.decode() if value is not None else ""


def _row(r: tuple[Any, ...]) -> CheckpointRow:
    blobs = [(_text(ch), _text(ty), bl) for ch, ty, bl in (r[7] or [])]
    items = [(_text(ch), _text(ty), bl) for ch, ty, bl in (r[8] or [])]
    writes = [(_text(t), _text(ch), _text(ty), bl, _text(p), int(_text(i))) for t, ch, ty, bl, p, i in (r[9] or [])]
    return CheckpointRow(r[0], r[1], r[2], r[3], r[4], r[5], blobs, json.loads(r[6]) if r[6] else {}, items, writes)


class CheckpointStore:
    """LangGraph checkpoint rows on a connection pool. Construct, then :meth:`open`."""

    def __init__(self, conninfo: str, *, pool_size: int = 4, migrate_on_open: bool = True) -> None:
        self._conninfo = conninfo
        self._pool_size = max(2, pool_size)
        self._migrate = migrate_on_open
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None

    def open(self) -> CheckpointStore:
        if self._pool is not None:
            return self
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._conninfo, min_size=1, max_size=self._pool_size, open=False, name="isotope-langgraph",
            kwargs={"autocommit": True, "application_name": "isotope-langgraph"}, timeout=30.0)
        try:
            pool.open(wait=True, timeout=30.0)
        except Exception as exc:
            pool.close()
            raise StoreUnavailable(f"cannot connect to PostgreSQL for LangGraph checkpoints: {exc}") from exc
        self._pool = pool
        if self._migrate:
            self.setup()
        return self

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def setup(self) -> None:
        """Create or upgrade Isotope's schema (checkpoint tables included); idempotent."""
        with self._conn() as conn:
            migrate(conn)

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        if self._pool is None:
            raise StoreNotOpen("the checkpoint store is not open; use IsotopeSaver.from_conn_string(url) "
                               "or call open() first")
        with self._pool.connection() as conn:
            yield conn

    # ------------------------------------------------------------------ writes

    def put(self, step: StepRows) -> None:
        """Write one checkpoint in one statement. Raises :class:`EpochTaken` (nothing written)."""
        params: dict[str, Any] = {
            "tid": step.thread_id, "ns": step.checkpoint_ns, "cid": step.checkpoint_id, "parent": step.parent_id,
            "cp": Jsonb(step.checkpoint), "md": Jsonb(step.metadata), "sdata": SESSION_DATA,
            "hours": step.expires_in_hours, "lists": Jsonb(step.lists) if step.lists else None,
        }
        if step.blobs:
            params.update(b_ch=[b[0] for b in step.blobs], b_ver=[b[1] for b in step.blobs],
                          b_ty=[b[2] for b in step.blobs], b_bl=[b[3] for b in step.blobs])
        if step.items:
            params.update(i_ch=[i[0] for i in step.items], i_ep=[i[1] for i in step.items],
                          i_pos=[i[2] for i in step.items], i_ty=[i[3] for i in step.items],
                          i_bl=[i[4] for i in step.items])
        for again in (False, True):
            statement = put_statement(step.touch, bool(step.blobs), bool(step.items), again)
            try:
                with self._conn() as conn:
                    conn.execute(statement, params)
                return
            except pg_errors.UniqueViolation as exc:
                if exc.diag.constraint_name == ITEMS_KEY:
                    raise EpochTaken(step.thread_id) from exc
                if again:
                    raise
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"could not save a LangGraph checkpoint: {exc}") from exc

    def put_writes(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str, task_id: str, task_path: str,
                   rows: Sequence[tuple[int, str, str, bytes | None]], upsert: bool) -> None:
        if not rows:
            return
        params = {"tid": thread_id, "ns": checkpoint_ns, "cid": checkpoint_id, "task": task_id, "path": task_path,
                  "sdata": SESSION_DATA,
                  "w_idx": [r[0] for r in rows], "w_ch": [r[1] for r in rows], "w_ty": [r[2] for r in rows],
                  "w_bl": [r[3] for r in rows]}
        for statement in (INSERT_WRITES, UPSERT_WRITES_AGAIN if upsert else INSERT_WRITES_AGAIN):
            try:
                with self._conn() as conn:
                    conn.execute(statement, params)
                return
            except pg_errors.UniqueViolation:
                if statement is not INSERT_WRITES:
                    raise
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"could not save LangGraph pending writes: {exc}") from exc

    # ------------------------------------------------------------------ reads

    def get(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None,
            known: dict[str, list[list[int]]] | None = None) -> CheckpointRow | None:
        """The checkpoint (latest without an id); lists whose segments are in ``known`` come without items."""
        params = {"tid": thread_id, "ns": checkpoint_ns, "cid": checkpoint_id, "known": Jsonb(known) if known else None}
        with self._conn() as conn:
            row = conn.execute(GET_ONE if checkpoint_id else GET_LATEST, params).fetchone()
        return _row(row) if row else None

    def list(self, thread_id: str | None, checkpoint_ns: str | None, checkpoint_id: str | None,
             filter: dict[str, Any] | None, before: str | None, limit: int | None) -> list[CheckpointRow]:
        params = {"tid": thread_id, "ns": checkpoint_ns, "cid": checkpoint_id,
                  "filter": Jsonb(filter) if filter else None, "before": before, "limit": limit, "known": None}
        with self._conn() as conn:
            return [_row(r) for r in conn.execute(LIST, params).fetchall()]

    # ------------------------------------------------------------------ thread-wide operations

    def delete_thread(self, thread_id: str) -> None:
        """Hard-delete the thread's session; its checkpoint rows go with it (trigger of migration 7)."""
        with self._conn() as conn:
            conn.execute(session_sql.HARD_DELETE, {"sid": thread_id})

    def copy_thread(self, source: str, target: str) -> None:
        with self._conn() as conn, conn.transaction():
            row = conn.execute(SOURCE_EXISTS, {"src": source}).fetchone()
            if not row or not row[0]:
                return
            conn.execute(COPY_THREAD, {"src": source, "dst": target, "sdata": SESSION_DATA})

    def prune(self, thread_ids: Sequence[str], strategy: str) -> None:
        tids = list(thread_ids)
        if not tids:
            return
        if strategy == "delete":
            for tid in tids:
                self.delete_thread(tid)
            return
        if strategy != "keep_latest":
            raise InvalidInput("strategy", f"is {strategy!r}; use 'keep_latest' or 'delete'")
        with self._conn() as conn, conn.transaction():
            delta = [r[0] for r in conn.execute(DELTA_THREADS, {"tids": tids})]
            if delta:
                raise NotImplementedError(f"keep_latest can't prune threads that use a DeltaChannel: "
                                          f"{', '.join(sorted(delta))}")
            conn.execute(PRUNE_OLD_CHECKPOINTS, {"tids": tids})
            conn.execute(GC_BLOBS, {"tids": tids})
            conn.execute(GC_ITEMS, {"tids": tids})

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        runs = [str(r) for r in run_ids]
        if not runs:
            return
        with self._conn() as conn, conn.transaction():
            tids = [r[0] for r in conn.execute(DELETE_RUNS, {"runs": runs})]
            if tids:
                conn.execute(GC_BLOBS, {"tids": tids})
                conn.execute(GC_ITEMS, {"tids": tids})
