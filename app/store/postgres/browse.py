"""Reads for the web console on the PostgreSQL store: search, deleted sessions, growth and cleanup.

**Search** matches a session's id, name and user id (substring, case-insensitive; one lowered
``strpos`` over the three, a third of the cost of three ``ILIKE``) and the text of
its messages (PostgreSQL full-text search over ``isotope_message_tsvector(message)``, a GIN index
added by migration 5). The text search configuration is ``simple`` (no stemming, no stop words:
every language is treated alike), and runs of Chinese/Japanese characters are indexed one
character per lexeme, because they are written without spaces; a query's CJK run becomes a phrase
of its characters (``浇水`` -> ``'浇' <-> '水'``), so a phrase matches only where its characters
stand together. Queries use ``websearch_to_tsquery`` syntax: words (all must match), ``"a
phrase"``, ``or``, ``-word``.

Everything here is a read except :func:`restore` (one row update). Nothing goes through the
store's delta cache: the console looks at sessions, it does not take turns on them.
"""

from __future__ import annotations

import re
from typing import Any, LiteralString

from app.store import codec
from app.store.base import SessionInfo, StoredSession
from app.store.delta import assemble
from app.store.postgres.connections import one
from app.store.postgres.reads import info_from_json
from app.store.postgres.store import PostgresStore

# Characters written without spaces between words: kana, CJK ideographs (and extension A,
# compatibility ideographs), half-width katakana. Migration 6 spaces out the same ranges.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_CJK_RUN = re.compile(f"[{CJK}]+")
_QUERY_PART = re.compile(r'"[^"]*"?|[^\s"]+')
_WORD = re.compile(r"\w")

_LIVE: LiteralString = "s.is_active AND (s.expires_at IS NULL OR s.expires_at > now())"

# One JSON array, like the store's listings; the ninth element says whether message text matched.
_SEARCH: LiteralString = """
SELECT COALESCE(json_agg(json_build_array(session_id, metadata, created_at, last_updated, expires_at, version,
                                          live, message_count, in_messages) ORDER BY last_updated DESC), '[]')::text
       AS listing
  FROM (SELECT s.session_id, s.metadata, s.created_at, s.last_updated, s.expires_at, s.version,
               {live} AS live,
               COALESCE((s.session_data #>> '{{messages,count}}')::int, 0) AS message_count,
               s.session_id IN (SELECT session_id FROM hits) AS in_messages
          FROM isotope_sessions s
         WHERE {where}
               (strpos(lower(s.session_id || chr(10) || COALESCE(s.metadata ->> 'name', '') || chr(10)
                             || COALESCE(s.metadata ->> 'user_id', '')), lower(%(needle)s)) > 0
                OR s.session_id IN (SELECT session_id FROM hits))
         ORDER BY s.last_updated DESC LIMIT %(limit)s OFFSET %(offset)s) page
"""
# The sessions whose messages match: one pass over the GIN index, whatever the page.
_HITS: LiteralString = """
WITH hits AS MATERIALIZED (
    SELECT DISTINCT m.session_id FROM isotope_messages m
     WHERE isotope_message_tsvector(m.message) @@ websearch_to_tsquery('simple', %(text)s::text))
"""
_NO_HITS: LiteralString = "WITH hits AS (SELECT NULL::varchar AS session_id WHERE false)"
SEARCH_ACTIVE: LiteralString = _HITS + _SEARCH.format(live=_LIVE, where=f"{_LIVE} AND")
SEARCH_ALL: LiteralString = _HITS + _SEARCH.format(live=_LIVE, where="")
SEARCH_NAMES_ACTIVE: LiteralString = _NO_HITS + _SEARCH.format(live=_LIVE, where=f"{_LIVE} AND")
SEARCH_NAMES_ALL: LiteralString = _NO_HITS + _SEARCH.format(live=_LIVE, where="")

# The store's LOAD without its "active and not expired" condition: deleted sessions can be looked at.
LOAD_ANY: LiteralString = """
SELECT s.session_data::text AS session_data, s.metadata::text AS metadata, s.version, s.created_at,
       s.last_updated, s.expires_at, s.is_active AND (s.expires_at IS NULL OR s.expires_at > now()) AS is_active,
       (SELECT json_agg(m.message ORDER BY m.seq)
          FROM isotope_messages m WHERE m.session_id = s.session_id)::text AS messages,
       (SELECT json_object_agg(b.name, b.value)
          FROM isotope_session_members b WHERE b.session_id = s.session_id)::text AS members
  FROM isotope_sessions s
 WHERE s.session_id = %(sid)s
"""

# Undo a soft delete. An expiry already past is cleared too, or the session would stay invisible.
RESTORE: LiteralString = """
UPDATE isotope_sessions
   SET is_active = TRUE,
       expires_at = CASE WHEN expires_at <= now() THEN NULL ELSE expires_at END
 WHERE session_id = %(sid)s
RETURNING 1 AS done
"""

# Growth and cleanup at a glance: one pass over the sessions table.
HOUSEKEEPING: LiteralString = """
SELECT count(*) FILTER (WHERE NOT is_active) AS deleted_sessions,
       count(*) FILTER (WHERE is_active AND expires_at IS NOT NULL AND expires_at <= now())
           AS expired_awaiting_cleanup,
       count(*) FILTER (WHERE is_active AND expires_at > now() AND expires_at <= now() + interval '24 hours')
           AS expiring_within_24h,
       COALESCE((SELECT json_agg(json_build_array(day, n) ORDER BY day)
                   FROM (SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*) AS n
                           FROM isotope_sessions
                          WHERE created_at >= now() - make_interval(days => %(days)s)
                          GROUP BY 1) d), '[]')::text AS created_per_day
  FROM isotope_sessions
"""


def text_query(query: str) -> str | None:
    """The user's search words as ``websearch_to_tsquery`` input, with every CJK run turned into a
    phrase of its characters; None when nothing in it can match a word."""
    if not _WORD.search(query):
        return None
    parts: list[str] = []
    for part in _QUERY_PART.findall(query):
        if part.startswith('"'):
            inner = part.strip('"')
            parts.append(f'"{_space_cjk(inner)}"')
        elif _CJK_RUN.search(part):
            parts.append(f'"{_space_cjk(part)}"')
        else:
            parts.append(part)
    return " ".join(parts)


def _space_cjk(text: str) -> str:
    return " ".join(_CJK_RUN.sub(lambda m: " " + " ".join(m.group(0)) + " ", text).split())


def like_pattern(query: str) -> str:
    """``%query%`` for ILIKE, with the pattern characters in ``query`` taken literally."""
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search(store: PostgresStore, query: str, limit: int, offset: int,
           include_inactive: bool) -> list[tuple[SessionInfo, bool]]:
    """Sessions whose id, name or user id contains ``query``, or whose messages match its words;
    most recently updated first. Each comes with whether its messages matched."""
    text = text_query(query)
    params = {"needle": query.strip(), "text": text, "limit": limit, "offset": offset}
    if text is None:
        statement = SEARCH_NAMES_ALL if include_inactive else SEARCH_NAMES_ACTIVE
    else:
        statement = SEARCH_ALL if include_inactive else SEARCH_ACTIVE
    row = store.connections.run("search", lambda conn, _: one(conn, statement, params))
    items = codec.loads(row["listing"]) if row else []
    return [(info_from_json(item[:8]), bool(item[8])) for item in items]


def load_any(store: PostgresStore, session_id: str) -> StoredSession | None:
    """The session whether active, deleted or expired; None when no row has this id."""
    row = store.connections.run("load", lambda conn, _: one(conn, LOAD_ANY, {"sid": session_id}))
    if row is None:
        return None
    try:
        session_data = codec.loads(row["session_data"])
        metadata = codec.loads(row["metadata"]) if row["metadata"] is not None else {}
        messages = codec.loads(row["messages"]) if row["messages"] is not None else []
        members = codec.loads(row["members"]) if row["members"] is not None else {}
        data = assemble(session_data, messages, members)
    except codec.CodecError as exc:
        raise codec.CodecError(f"session {session_id!r} cannot be decoded: {exc}") from exc
    marker = session_data.get("messages") if isinstance(session_data.get("messages"), dict) else {}
    count = int(marker.get("count", 0)) if marker.get(codec.TAG) == "messages" else 0
    return StoredSession(
        session_id=session_id, data=data, metadata=metadata if isinstance(metadata, dict) else {},
        version=row["version"], created_at=row["created_at"], last_updated=row["last_updated"],
        expires_at=row["expires_at"], is_active=bool(row["is_active"]), message_count=count, backend=store.name,
    )


def restore(store: PostgresStore, session_id: str) -> bool:
    """Make a soft-deleted (or expired) session active again; False when no row has this id."""
    row = store.connections.run("restore", lambda conn, _: one(conn, RESTORE, {"sid": session_id}),
                                store.locks.connection(session_id))
    return row is not None


def housekeeping(store: PostgresStore, days: int = 14) -> dict[str, Any]:
    """Deleted sessions, expired ones the next cleanup will deactivate, those expiring within a day,
    and sessions created per day (UTC) over the last ``days`` days."""
    row = store.connections.run("housekeeping", lambda conn, _: one(conn, HOUSEKEEPING, {"days": days}))
    assert row is not None
    return {
        "deleted_sessions": int(row["deleted_sessions"]),
        "expired_awaiting_cleanup": int(row["expired_awaiting_cleanup"]),
        "expiring_within_24h": int(row["expiring_within_24h"]),
        "created_per_day": [{"day": day, "sessions": int(n)} for day, n in codec.loads(row["created_per_day"])],
    }
