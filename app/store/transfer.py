"""Moving whole sessions in and out of PostgreSQL: export, import, fork (store level).

Export and import run on a connection of their own (:func:`connect`), not on the store's pool:
a long export holds one REPEATABLE READ snapshot for minutes, past the pool's per-operation
deadlines, and must not take a connection away from turns. A fork is one short statement and
runs on the pool like any other operation.

* **Export** is one server-side cursor over the chosen sessions, ordered by id. PostgreSQL builds
  each line's envelope (``json_build_object``) and, for sessions up to :data:`INLINE_MESSAGES`
  messages, the message array; longer sessions stream their messages through a second cursor,
  :data:`MESSAGE_BATCH` at a time. Python only writes text: memory stays flat whatever the size
  of the sessions or of the export.
* **Import** writes one session per savepoint inside a batch transaction: a session is all
  there or not at all, and the batch's commit (one WAL flush for many sessions) is the only
  moment its sessions become visible.
* **Fork** copies the row, the message rows (all, or the first N) and the member rows in one
  statement, so the copy is one snapshot of the source and costs one pass over what is copied.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from app.errors import InvalidInput, IsotopeError, SessionBusy, SessionExists, SessionNotFound, StoreUnavailable
from app.store.postgres import PostgresStore, sql
from app.store.postgres.session_lock import lock_key
from app.store.schema import migrate

FORMAT = "isotope.session"
FORMAT_VERSION = 1
INLINE_MESSAGES = 500  # sessions up to this many messages come with their line's first row
MESSAGE_BATCH = 500  # rows per fetch when a longer session streams its messages (~0.5 MB)
SESSIONS_PER_FETCH = 20  # rows per fetch of the session cursor (at most ~20 x 500 messages in memory)
MESSAGES_PER_INSERT = 5_000

_ACTIVE = "s.is_active AND (s.expires_at IS NULL OR s.expires_at > now())"
_HAS_LIST = ("(s.session_data #>> '{messages,$iso}' = 'messages' "
             "AND s.session_data #>> '{messages,present}' IS DISTINCT FROM 'false')")

# One row per session: its id, the line without messages (the envelope ends with "data", so the
# messages can be appended as the line's last key), whether it has a message list, its count,
# and the messages themselves when there are few enough to carry in the row.
EXPORT_SESSIONS = f"""
SELECT s.session_id,
       json_build_object(
           'format', %(format)s::text, 'format_version', %(format_version)s::int,
           'session_id', s.session_id, 'version', s.version,
           'created_at', s.created_at, 'last_updated', s.last_updated, 'expires_at', s.expires_at,
           'is_active', s.is_active, 'metadata', COALESCE(s.metadata, '{{}}'::jsonb),
           'data', CASE WHEN s.session_data #>> '{{messages,$iso}}' = 'messages'
                        THEN s.session_data - 'messages' ELSE s.session_data END
                   || COALESCE((SELECT jsonb_object_agg(b.name, b.value) FROM isotope_session_members b
                                 WHERE b.session_id = s.session_id), '{{}}'::jsonb)
       )::text,
       {_HAS_LIST},
       COALESCE((s.session_data #>> '{{messages,count}}')::int, 0),
       CASE WHEN {_HAS_LIST}
             AND COALESCE((s.session_data #>> '{{messages,count}}')::int, 0) <= %(inline)s
            THEN (SELECT '[' || COALESCE(string_agg(m.message::text, ',' ORDER BY m.seq), '') || ']'
                    FROM isotope_messages m WHERE m.session_id = s.session_id) END
  FROM isotope_sessions s
 WHERE (%(ids)s::text[] IS NULL OR s.session_id = ANY(%(ids)s::text[]))
   AND (%(include_inactive)s OR ({_ACTIVE}))
   AND (%(user)s::text IS NULL OR s.metadata ->> 'user_id' = %(user)s::text)
 ORDER BY s.session_id
"""

EXPORT_COUNT = f"""
SELECT count(*) FROM isotope_sessions s
 WHERE (%(ids)s::text[] IS NULL OR s.session_id = ANY(%(ids)s::text[]))
   AND (%(include_inactive)s OR ({_ACTIVE}))
   AND (%(user)s::text IS NULL OR s.metadata ->> 'user_id' = %(user)s::text)
"""

EXPORT_MESSAGES = "SELECT message::text FROM isotope_messages WHERE session_id = %(sid)s ORDER BY seq"

EXISTING_IDS = "SELECT session_id FROM isotope_sessions WHERE session_id = ANY(%(ids)s::text[])"

IMPORT_ROW = """
INSERT INTO isotope_sessions (session_id, session_data, metadata, created_at, last_updated, expires_at,
                              version, is_active)
VALUES (%(sid)s, %(data)s::jsonb, %(meta)s::jsonb, %(created_at)s, %(last_updated)s, %(expires_at)s,
        %(version)s, %(is_active)s)
ON CONFLICT (session_id) DO NOTHING
RETURNING version
"""

LOCK_FOR_REPLACE = "SELECT version FROM isotope_sessions WHERE session_id = %(sid)s FOR UPDATE"

# The fork: every step reads the source as of the statement's one snapshot. `src` is the source
# if it is live; `ok` adds the checks on at_message; nothing is inserted unless `ok` has a row.
FORK = f"""
WITH src AS (
    SELECT s.session_id, s.session_data, s.metadata, s.expires_at, {_HAS_LIST} AS has_list,
           COALESCE((s.session_data #>> '{{messages,count}}')::int, 0) AS n
      FROM isotope_sessions s
     WHERE s.session_id = %(sid)s AND {_ACTIVE}
), ok AS (
    SELECT * FROM src WHERE %(at)s::int IS NULL OR (has_list AND %(at)s::int <= n)
), new_row AS (
    INSERT INTO isotope_sessions (session_id, session_data, metadata, expires_at)
    SELECT %(new)s,
           CASE WHEN %(at)s::int IS NULL THEN ok.session_data
                ELSE jsonb_set(jsonb_set(ok.session_data, '{{messages,count}}', to_jsonb(%(at)s::int)),
                               '{{messages,bytes}}',
                               to_jsonb((SELECT COALESCE(sum(octet_length(m.message::text)), 0)
                                           FROM isotope_messages m
                                          WHERE m.session_id = %(sid)s AND m.seq < %(at)s::int)))
           END,
           COALESCE(%(meta)s::jsonb, ok.metadata), ok.expires_at
      FROM ok
        ON CONFLICT (session_id) DO NOTHING
    RETURNING session_id
), msgs AS (
    INSERT INTO isotope_messages (session_id, seq, message)
    SELECT %(new)s, m.seq, m.message FROM isotope_messages m
     WHERE m.session_id = %(sid)s AND (%(at)s::int IS NULL OR m.seq < %(at)s::int)
       AND EXISTS (SELECT FROM new_row)
), members AS (
    INSERT INTO isotope_session_members (session_id, name, value)
    SELECT %(new)s, b.name, b.value FROM isotope_session_members b
     WHERE b.session_id = %(sid)s AND EXISTS (SELECT FROM new_row)
)
SELECT (SELECT n FROM src), (SELECT has_list FROM src), (SELECT count(*) FROM new_row)
"""


# ---------------------------------------------------------------------------------------------
# Connections


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Driver errors as domain errors (the pool's own translation lives in the store)."""
    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        raise SessionBusy(f"{what}: a session is locked by a running turn; retry later") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StoreUnavailable(f"PostgreSQL is unreachable ({what}): {_first_line(exc)}") from exc
    except psycopg.DataError as exc:
        raise InvalidInput("session_data", f"PostgreSQL rejected the data: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise IsotopeError(f"PostgreSQL failed during {what}: {_first_line(exc)}") from exc


@contextmanager
def connect(store: PostgresStore, what: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of its own on the store's database, schema migrated, times in UTC."""
    if store.conninfo is None:
        raise StoreUnavailable(f"PostgreSQL is not running ({what}); check `isotope doctor`")
    timeout = max(2, math.ceil(store.config.connect_timeout_s))
    with translated(what):
        conn = psycopg.connect(store.conninfo, autocommit=True, connect_timeout=timeout,
                               application_name=f"isotope {what}")
    try:
        with translated(what):
            conn.execute("SET TIME ZONE 'UTC'")
            migrate(conn)
        yield conn
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.close()


# ---------------------------------------------------------------------------------------------
# Export


@dataclass(frozen=True)
class Selection:
    """Which sessions to export: ``ids`` (None: all), inactive ones too, one user's only."""

    ids: list[str] | None = None
    include_inactive: bool = False
    user: str | None = None

    def params(self) -> dict[str, Any]:
        return {"ids": self.ids, "include_inactive": self.include_inactive, "user": self.user}


def count_selected(conn: psycopg.Connection[Any], selection: Selection) -> int:
    with translated("export"):
        row = conn.execute(EXPORT_COUNT, selection.params()).fetchone()
    return int(row[0]) if row else 0


def existing_ids(conn: psycopg.Connection[Any], ids: list[str]) -> set[str]:
    with translated("export"):
        return {r[0] for r in conn.execute(EXISTING_IDS, {"ids": ids})}


def export_lines(conn: psycopg.Connection[Any], selection: Selection,
                 inline: int = INLINE_MESSAGES) -> Iterator[tuple[str, Iterator[str]]]:
    """For each selected session, in id order: its id and the pieces of its JSON line.

    Consume each session's pieces before asking for the next session (they share the cursor's
    transaction). The whole export reads one snapshot: sessions saved meanwhile are either
    entirely as before or absent from it.
    """
    params = {**selection.params(), "format": FORMAT, "format_version": FORMAT_VERSION, "inline": inline}
    with translated("export"):
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction(), conn.cursor(name="isotope_export") as cursor:
            cursor.itersize = SESSIONS_PER_FETCH
            cursor.execute(EXPORT_SESSIONS, params)
            for sid, head, has_list, _count, messages in cursor:
                yield sid, _line(conn, sid, head, has_list, messages)


def _line(conn: psycopg.Connection[Any], sid: str, head: str, has_list: bool,
          messages: str | None) -> Iterator[str]:
    if not has_list:
        yield head + "\n"
        return
    # json_build_object's text ends with the envelope's closing brace: reopen it for "messages".
    yield head[:-1] + ', "messages": '
    if messages is not None:
        yield messages
    else:
        yield "["
        with translated("export"), conn.cursor(name="isotope_export_messages") as rows:
            rows.itersize = MESSAGE_BATCH
            rows.execute(EXPORT_MESSAGES, {"sid": sid})
            first = True
            while batch := rows.fetchmany(MESSAGE_BATCH):
                yield ("" if first else ",") + ",".join(r[0] for r in batch)
                first = False
        yield "]"
    yield "}\n"


# ---------------------------------------------------------------------------------------------
# Import


@dataclass
class SessionRows:
    """One session as its rows: what an import writes (texts are encoded JSON)."""

    session_id: str
    version: int
    created_at: datetime
    last_updated: datetime
    expires_at: datetime | None
    is_active: bool
    session_data: str
    metadata: str
    messages: list[str]
    members: dict[str, str]


@contextmanager
def batch(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """One transaction (one commit) around many :func:`write_session` calls, which become its
    savepoints. ``conn`` must be in autocommit mode, as :func:`connect` leaves it."""
    with translated("import"), conn.transaction():
        yield


def write_session(conn: psycopg.Connection[Any], rows: SessionRows, on_conflict: str,
                  new_id: Any = None) -> tuple[str, str]:
    """Write one session in a savepoint of the caller's transaction: all of it, or nothing.

    ``on_conflict``: ``skip`` leaves an existing session alone, ``replace`` swaps it for this one
    (under the session's turn lock, so never under a running turn; the version moves past the
    replaced one so other processes' cached copies are not trusted), ``new-id`` stores this one
    under ``new_id()``. Returns ``(outcome, session_id)``, outcome ``imported``, ``replaced`` or
    ``skipped``.
    """
    sid = rows.session_id
    with translated("import"), conn.transaction():
        if _insert_row(conn, rows, sid, rows.version):
            _insert_rest(conn, rows, sid)
            return "imported", sid
        if on_conflict == "skip":
            return "skipped", sid
        if on_conflict == "new-id":
            while True:
                sid = new_id()
                if _insert_row(conn, rows, sid, rows.version):
                    _insert_rest(conn, rows, sid)
                    return "imported", sid
        locked = conn.execute(sql.TRY_SESSION_XACT_LOCK, {"key": lock_key(sid)}).fetchone()
        if locked is None or not locked[0]:
            raise SessionBusy(f"session {sid!r} is in a turn; it was not replaced, import it again later")
        old = conn.execute(LOCK_FOR_REPLACE, {"sid": sid}).fetchone()
        conn.execute(sql.HARD_DELETE, {"sid": sid})
        version = max(rows.version, int(old[0]) + 1) if old is not None else rows.version
        if not _insert_row(conn, rows, sid, version):
            raise IsotopeError(f"session {sid!r} could not be replaced (written again meanwhile); retry")
        _insert_rest(conn, rows, sid)
        return "replaced", sid


def _insert_row(conn: psycopg.Connection[Any], rows: SessionRows, sid: str, version: int) -> bool:
    row = conn.execute(IMPORT_ROW, {
        "sid": sid, "data": rows.session_data, "meta": rows.metadata, "created_at": rows.created_at,
        "last_updated": rows.last_updated, "expires_at": rows.expires_at, "version": version,
        "is_active": rows.is_active,
    }).fetchone()
    return row is not None


def _insert_rest(conn: psycopg.Connection[Any], rows: SessionRows, sid: str) -> None:
    for base in range(0, len(rows.messages), MESSAGES_PER_INSERT):
        texts = rows.messages[base:base + MESSAGES_PER_INSERT]
        conn.execute(sql.INSERT_MESSAGES, {"sid": sid, "base": base, "msgs": texts})
    if rows.members:
        conn.execute(sql.UPSERT_MEMBERS, {"sid": sid, "mk": list(rows.members), "mv": list(rows.members.values())})


# ---------------------------------------------------------------------------------------------
# Fork


def fork(store: PostgresStore, source: str, target: str, at: int | None, metadata: str | None) -> None:
    """Copy ``source`` (its first ``at`` messages, or all) to a new session ``target``."""
    params = {"sid": source, "new": target, "at": at, "meta": metadata}
    row = store.connections.run("fork", lambda conn, _: conn.execute(FORK, params).fetchone(),
                                store.locks.connection(source))
    store.forget(target)
    count, has_list, created = row if row is not None else (None, None, 0)
    if created:
        return
    if count is None:
        raise SessionNotFound(source)
    if at is not None and not has_list:
        raise InvalidInput("at_message", f"session {source!r} has no message list to cut")
    if at is not None and at > count:
        raise InvalidInput("at_message", f"is {at}, past the {count} messages of session {source!r}")
    raise SessionExists(target)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
