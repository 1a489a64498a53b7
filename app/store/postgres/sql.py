"""Every statement the PostgreSQL store runs, as named constants with bound parameters.

Each write touches one session (``session_id = %(sid)s``); only listing, statistics and the
expiry scan read across sessions. Constants are ``LiteralString`` (psycopg's ``Query``), so its
check that no value is formatted into a statement applies; every selected column has a name, and
callers read rows by it (:func:`app.store.postgres.connections.one`).
"""

from typing import Final, LiteralString

# The hot path: the cache says the row is at %(expected)s, so one statement (one round trip,
# one commit) bumps the row and appends the new messages (and writes the large members that
# changed). Every CTE depends on `upd`: when the version moved nothing at all is written and the
# caller takes the locked path. The statement is built per shape (how many messages, whether
# members change) so the common turn is a plain VALUES list: measured against unnest(text[]),
# which parses a text array of ~600-byte strings, it cuts the statement from 2.1x to 1.5x of a
# bare 2-row INSERT.
_APPEND_UPDATE: Final[LiteralString] = """
WITH upd AS (
    UPDATE isotope_sessions
       SET session_data = %(data)s::jsonb,
           metadata = COALESCE(%(meta)s::jsonb, metadata),
           expires_at = CASE WHEN %(hours)s::float8 IS NULL THEN expires_at
                             ELSE now() + %(hours)s::float8 * interval '1 hour' END,
           last_updated = now(),
           version = version + 1,
           is_active = TRUE
     WHERE session_id = %(sid)s AND version = %(expected)s
 RETURNING version
)"""

_APPEND_VALUES: Final[LiteralString] = """, msg AS (
    INSERT INTO isotope_messages (session_id, seq, message)
    SELECT v.s, v.q, v.m FROM upd, (VALUES {rows}) AS v(s, q, m)
)"""

_APPEND_UNNEST: Final[LiteralString] = """, msg AS (
    INSERT INTO isotope_messages (session_id, seq, message)
    SELECT %(sid)s, %(base)s + t.ord::int - 1, t.m::jsonb
      FROM upd, unnest(%(msgs)b::text[]) WITH ORDINALITY AS t(m, ord)
)"""

_APPEND_MEMBERS: Final[LiteralString] = """, mem AS (
    INSERT INTO isotope_session_members (session_id, name, value)
    SELECT %(sid)s, u.k, u.v::jsonb
      FROM upd, unnest(%(mk)b::text[], %(mv)b::text[]) AS u(k, v)
        ON CONFLICT (session_id, name) DO UPDATE SET value = EXCLUDED.value
), gone AS (
    DELETE FROM isotope_session_members
     WHERE session_id = %(sid)s AND name = ANY(%(del)b::text[]) AND EXISTS (SELECT FROM upd)
)"""

APPEND_VALUES_MAX: Final = 8


def append_statement(messages: int, members: bool) -> LiteralString:
    """The hot-path statement for ``messages`` new messages (parameters m0, m1...)."""
    text = _APPEND_UPDATE
    if 0 < messages <= APPEND_VALUES_MAX:
        rows = ", ".join(f"(%(sid)s, %(base)s::int + {i}, %(m{i})s::jsonb)" for i in range(messages))
        text += _APPEND_VALUES.format(rows=rows)
    elif messages:
        text += _APPEND_UNNEST
    if members:
        text += _APPEND_MEMBERS
    # Built only from the literals above and generated parameter names, never from values.
    return text + "\nSELECT version FROM upd"


# The locked path, one transaction: lock the row, find where the stored history first differs
# from the new one, cut there, append the rest, sync members, bump the row.
LOCK_ROW: Final[LiteralString] = """
SELECT version, COALESCE((session_data #>> '{messages,count}')::int, 0) AS message_count
  FROM isotope_sessions WHERE session_id = %(sid)s FOR UPDATE
"""

CREATE_ROW: Final[LiteralString] = """
INSERT INTO isotope_sessions (session_id, session_data, metadata, expires_at)
VALUES (%(sid)s, %(data)s::jsonb, COALESCE(%(meta)s::jsonb, '{}'::jsonb),
        CASE WHEN %(hours)s::float8 IS NULL THEN NULL
             ELSE now() + %(hours)s::float8 * interval '1 hour' END)
ON CONFLICT (session_id) DO NOTHING
RETURNING version, created_at, last_updated, expires_at
"""

FIRST_DIFFERENCE: Final[LiteralString] = """
WITH new AS (
    SELECT t.ord::int - 1 AS seq, t.m::jsonb AS message
      FROM unnest(%(msgs)b::text[]) WITH ORDINALITY AS t(m, ord)
), old AS (
    SELECT seq, message FROM isotope_messages WHERE session_id = %(sid)s
)
SELECT min(COALESCE(new.seq, old.seq)) AS first
  FROM new FULL JOIN old ON new.seq = old.seq
 WHERE new.message IS DISTINCT FROM old.message
"""

CUT_MESSAGES: Final[LiteralString] = "DELETE FROM isotope_messages WHERE session_id = %(sid)s AND seq >= %(base)s"

INSERT_MESSAGES: Final[LiteralString] = """
INSERT INTO isotope_messages (session_id, seq, message)
SELECT %(sid)s, %(base)s + t.ord::int - 1, t.m::jsonb
  FROM unnest(%(msgs)b::text[]) WITH ORDINALITY AS t(m, ord)
"""

UPSERT_MEMBERS: Final[LiteralString] = """
INSERT INTO isotope_session_members AS b (session_id, name, value)
SELECT %(sid)s, u.k, u.v::jsonb FROM unnest(%(mk)b::text[], %(mv)b::text[]) AS u(k, v)
    ON CONFLICT (session_id, name) DO UPDATE SET value = EXCLUDED.value
 WHERE b.value IS DISTINCT FROM EXCLUDED.value
"""

DELETE_OTHER_MEMBERS: Final[LiteralString] = """
DELETE FROM isotope_session_members WHERE session_id = %(sid)s AND NOT (name = ANY(%(keep)b::text[]))
"""

DELETE_MEMBERS: Final[LiteralString] = """
DELETE FROM isotope_session_members WHERE session_id = %(sid)s AND name = ANY(%(names)b::text[])
"""

UPDATE_ROW: Final[LiteralString] = """
UPDATE isotope_sessions
   SET session_data = %(data)s::jsonb,
       metadata = COALESCE(%(meta)s::jsonb, metadata),
       expires_at = CASE WHEN %(hours)s::float8 IS NULL THEN expires_at
                         ELSE now() + %(hours)s::float8 * interval '1 hour' END,
       last_updated = now(),
       version = version + 1,
       is_active = TRUE
 WHERE session_id = %(sid)s
RETURNING version, created_at, last_updated, expires_at
"""

# Replaying a spooled write: its expiry is absolute (fixed when the turn was acknowledged).
UPDATE_ROW_REPLAY: Final[LiteralString] = """
UPDATE isotope_sessions
   SET session_data = jsonb_set(%(data)s::jsonb, '{messages,count}', to_jsonb(%(count)s::int), FALSE),
       metadata = COALESCE(%(meta)s::jsonb, metadata),
       expires_at = CASE WHEN %(set_expiry)s THEN %(expires_at)s::timestamptz ELSE expires_at END,
       last_updated = now(),
       version = version + 1,
       is_active = TRUE
 WHERE session_id = %(sid)s
RETURNING version, created_at, last_updated, expires_at
"""

CREATE_ROW_REPLAY: Final[LiteralString] = """
INSERT INTO isotope_sessions (session_id, session_data, metadata, expires_at, created_at)
VALUES (%(sid)s, jsonb_set(%(data)s::jsonb, '{messages,count}', to_jsonb(%(count)s::int), FALSE),
        COALESCE(%(meta)s::jsonb, '{}'::jsonb), %(expires_at)s::timestamptz, %(created_at)s)
RETURNING version, created_at, last_updated, expires_at
"""

# Did a write whose outcome was unknown (connection lost at commit) land after all?
TAIL_MATCHES: Final[LiteralString] = """
SELECT count(*) AS matched FROM isotope_messages m
  JOIN unnest(%(msgs)b::text[]) WITH ORDINALITY AS t(x, ord) ON m.seq = %(base)s + t.ord::int - 1
 WHERE m.session_id = %(sid)s AND m.message = t.x::jsonb
"""

SPOOL_ALREADY_APPLIED: Final[LiteralString] = """
SELECT version FROM isotope_spool_applied WHERE session_id = %(sid)s AND write_id = %(wid)s
"""

SPOOL_MARK_APPLIED: Final[LiteralString] = """
INSERT INTO isotope_spool_applied (session_id, write_id, version) VALUES (%(sid)s, %(wid)s, %(version)s)
"""

LOAD: Final[LiteralString] = """
SELECT s.session_data::text AS session_data, s.metadata::text AS metadata, s.version, s.created_at,
       s.last_updated, s.expires_at, s.is_active,
       (SELECT json_agg(m.message ORDER BY m.seq)
          FROM isotope_messages m WHERE m.session_id = s.session_id)::text AS messages,
       (SELECT json_object_agg(b.name, b.value)
          FROM isotope_session_members b WHERE b.session_id = s.session_id)::text AS members
  FROM isotope_sessions s
 WHERE s.session_id = %(sid)s AND s.is_active AND (s.expires_at IS NULL OR s.expires_at > now())
"""

_INFO_COLUMNS: Final[LiteralString] = """
session_id, metadata::text AS metadata, created_at, last_updated, expires_at, version,
is_active AND (expires_at IS NULL OR expires_at > now()) AS is_active,
COALESCE((session_data #>> '{messages,count}')::int, 0) AS message_count
"""

_ACTIVE: Final[LiteralString] = "is_active AND (expires_at IS NULL OR expires_at > now())"

INFO: Final[LiteralString] = f"SELECT {_INFO_COLUMNS} FROM isotope_sessions WHERE session_id = %(sid)s"

# Listings come back as one JSON array: one value to transfer and parse instead of a row of
# Python objects per session (measured: a third of the client's instructions for 50 sessions).
_LIST_JSON: Final[LiteralString] = """
SELECT COALESCE(json_agg(json_build_array(session_id, metadata, created_at, last_updated, expires_at, version,
                                          live, message_count) ORDER BY last_updated DESC), '[]')::text AS listing
  FROM (SELECT session_id, metadata, created_at, last_updated, expires_at, version,
               is_active AND (expires_at IS NULL OR expires_at > now()) AS live,
               COALESCE((session_data #>> '{{messages,count}}')::int, 0) AS message_count
          FROM isotope_sessions {where}
         ORDER BY last_updated DESC LIMIT %(limit)s OFFSET %(offset)s) page
"""

LIST_ACTIVE = _LIST_JSON.format(where=f"WHERE {_ACTIVE}")
LIST_ALL = _LIST_JSON.format(where="")

COUNT_ACTIVE: Final[LiteralString] = f"SELECT count(*) AS n FROM isotope_sessions WHERE {_ACTIVE}"
COUNT_ALL: Final[LiteralString] = "SELECT count(*) AS n FROM isotope_sessions"

ACTIVE_IDS: Final[LiteralString] = f"SELECT session_id FROM isotope_sessions WHERE {_ACTIVE} ORDER BY last_updated DESC"

STATISTICS: Final[LiteralString] = f"""
SELECT count(*) AS total_sessions,
       count(*) FILTER (WHERE {_ACTIVE}) AS active_sessions,
       count(*) FILTER (WHERE expires_at IS NOT NULL AND expires_at <= now()) AS expired_sessions,
       COALESCE(sum((session_data #>> '{{messages,count}}')::int), 0) AS total_messages,
       COALESCE(avg((session_data #>> '{{messages,count}}')::int) FILTER (WHERE {_ACTIVE}), 0)
           AS avg_messages_per_session,
       min(created_at) AS oldest_session, max(created_at) AS newest_session,
       count(*) FILTER (WHERE created_at > now() - interval '24 hours') AS sessions_last_24h,
       pg_total_relation_size('isotope_sessions') + pg_total_relation_size('isotope_messages')
       + pg_total_relation_size('isotope_session_members')
       + pg_total_relation_size('isotope_spool_applied') AS storage_bytes
  FROM isotope_sessions
"""

SOFT_DELETE: Final[LiteralString] = (
    "UPDATE isotope_sessions SET is_active = FALSE WHERE session_id = %(sid)s RETURNING 1 AS done"
)

HARD_DELETE: Final[LiteralString] = """
WITH m AS (DELETE FROM isotope_messages WHERE session_id = %(sid)s),
     b AS (DELETE FROM isotope_session_members WHERE session_id = %(sid)s),
     a AS (DELETE FROM isotope_spool_applied WHERE session_id = %(sid)s)
DELETE FROM isotope_sessions WHERE session_id = %(sid)s RETURNING 1 AS done
"""

# Expiry: the scan reads across sessions (it must); each change is then made per session.
EXPIRED_ACTIVE: Final[LiteralString] = """
SELECT session_id FROM isotope_sessions
 WHERE is_active AND expires_at IS NOT NULL AND expires_at <= now()
 LIMIT %(batch)s
"""

# Hard cleanup. Without an age: every expired session. With one (api.hard_delete_after_hours):
# sessions expired that long ago, and sessions deactivated and untouched for that long.
_DOOMED: Final[LiteralString] = """
    (%(stale_hours)s::float8 IS NULL AND expires_at IS NOT NULL AND expires_at <= now())
 OR (%(stale_hours)s::float8 IS NOT NULL
     AND ((expires_at IS NOT NULL AND expires_at <= now() - %(stale_hours)s::float8 * interval '1 hour')
          OR (NOT is_active AND last_updated <= now() - %(stale_hours)s::float8 * interval '1 hour')))
"""

EXPIRED_OR_STALE: Final[LiteralString] = f"""
SELECT session_id FROM isotope_sessions WHERE {_DOOMED} LIMIT %(batch)s
"""

DEACTIVATE_IF_EXPIRED: Final[LiteralString] = """
UPDATE isotope_sessions SET is_active = FALSE
 WHERE session_id = %(sid)s AND is_active AND expires_at IS NOT NULL AND expires_at <= now()
RETURNING 1 AS done
"""

HARD_DELETE_IF_EXPIRED: Final[LiteralString] = f"""
WITH doomed AS (
    SELECT session_id FROM isotope_sessions WHERE session_id = %(sid)s AND ({_DOOMED}) FOR UPDATE
), m AS (DELETE FROM isotope_messages WHERE session_id IN (SELECT session_id FROM doomed)),
   b AS (DELETE FROM isotope_session_members WHERE session_id IN (SELECT session_id FROM doomed)),
   a AS (DELETE FROM isotope_spool_applied WHERE session_id IN (SELECT session_id FROM doomed))
DELETE FROM isotope_sessions WHERE session_id IN (SELECT session_id FROM doomed) RETURNING 1 AS done
"""

PING: Final[LiteralString] = """
SELECT current_database() AS database, current_setting('server_version') AS server_version,
       current_setting('synchronous_commit') AS synchronous_commit, current_setting('fsync') AS fsync
"""

SESSION_LOCK: Final[LiteralString] = "SELECT pg_advisory_lock(%(key)s)"
SESSION_UNLOCK: Final[LiteralString] = "SELECT pg_advisory_unlock(%(key)s)"
# Replaying a spooled write takes the session's turn lock for its transaction (shared key space
# with SESSION_LOCK): a turn of another instance must not run between its read and its save.
TRY_SESSION_XACT_LOCK: Final[LiteralString] = "SELECT pg_try_advisory_xact_lock(%(key)s) AS locked"

# Per connection: the server enforces these, the client's deadlines (deadlines.py) back them up.
CONFIGURE: Final[LiteralString] = (
    "SELECT set_config('statement_timeout', %s, false), set_config('idle_in_transaction_session_timeout', %s, false)"
)
SET_LOCK_TIMEOUT: Final[LiteralString] = "SELECT set_config('lock_timeout', %s, false)"
RESET_LOCK_TIMEOUT: Final[LiteralString] = "SELECT set_config('lock_timeout', '0', false)"
PROBE: Final[LiteralString] = "SELECT 1"
