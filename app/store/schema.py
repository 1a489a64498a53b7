"""The schema, as an ordered, append-only list of migrations with a version table.

Never edit a released migration: add one. ``migrate()`` applies what is missing under a
transaction-scoped advisory lock, so processes racing on an empty database queue up instead of
colliding on ``CREATE TABLE``. ``tests/test_schema.py`` proves that the migrations produce
:data:`CURRENT_SCHEMA_SUMMARY`'s tables and indexes.

Layout (every table carries ``session_id``, and no write touches two sessions, so the schema
could be distributed by ``session_id``):

* ``isotope_sessions``: the guide's table, one row per session. ``session_data`` holds the
  session's members other than its messages (small ones inline, large ones as a
  ``{"$iso": "member"}`` reference) and a ``{"$iso": "messages", "count": N}`` marker.
* ``isotope_messages``: append-only, one row per message, keyed ``(session_id, seq)``.
* ``isotope_session_members``: members too large to rewrite with every save.
* ``isotope_spool_applied``: ids of outage-spool writes already replayed (idempotent replay).
* ``isotope_session_documents``: a view giving each session as one jsonb document.
* ``isotope_lg_*``: LangGraph checkpoints, blobs, list-channel items and pending writes of
  sessions driven by :mod:`app.adapters.langgraph` (see :mod:`app.store.checkpoints`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg

from app.errors import MigrationError

log = logging.getLogger("isotope.store.schema")

# pg_advisory_xact_lock key for migrations: the first 8 bytes of sha1("isotope.schema").
MIGRATION_LOCK_KEY = 0x3A1F_5B7C_2D4E_6A01


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: LiteralString


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "sessions table, as the guide defines it", """
        CREATE TABLE IF NOT EXISTS isotope_sessions (
            session_id VARCHAR(255) PRIMARY KEY,
            session_data JSONB NOT NULL,
            metadata JSONB DEFAULT '{}',
            created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
            last_updated TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
            expires_at TIMESTAMP WITH TIME ZONE,
            version INTEGER DEFAULT 1,
            is_active BOOLEAN DEFAULT TRUE
        );
        CREATE INDEX IF NOT EXISTS idx_isotope_sessions_last_updated
            ON isotope_sessions (last_updated DESC);
        -- BRIN: created_at grows with insertion order, and every save (a non-HOT update, since
        -- last_updated is indexed) would put a new entry into a btree for a value that never
        -- changes. Statistics scan the whole table anyway.
        CREATE INDEX IF NOT EXISTS idx_isotope_sessions_created_at
            ON isotope_sessions USING brin (created_at);
        -- Partial: only inactive rows. Every save updates its row; a full index on a boolean
        -- would take a new entry per save for nothing (active rows are found through
        -- last_updated), costing WAL on the hottest path.
        CREATE INDEX IF NOT EXISTS idx_isotope_sessions_is_active
            ON isotope_sessions (is_active) WHERE NOT is_active;
        -- Partial for the same reason: sessions without an expiry never enter it.
        CREATE INDEX IF NOT EXISTS idx_isotope_sessions_expires_at
            ON isotope_sessions (expires_at) WHERE expires_at IS NOT NULL;
    """),
    Migration(2, "append-only messages and out-of-line members", """
        CREATE TABLE isotope_messages (
            session_id VARCHAR(255) NOT NULL,
            seq INTEGER NOT NULL,
            message JSONB NOT NULL,
            PRIMARY KEY (session_id, seq)
        );
        CREATE TABLE isotope_session_members (
            session_id VARCHAR(255) NOT NULL,
            name TEXT NOT NULL,
            value JSONB NOT NULL,
            PRIMARY KEY (session_id, name)
        );
    """),
    Migration(3, "replayed outage-spool writes", """
        CREATE TABLE isotope_spool_applied (
            session_id VARCHAR(255) NOT NULL,
            write_id UUID NOT NULL,
            applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
            version INTEGER NOT NULL,
            PRIMARY KEY (session_id, write_id)
        );
    """),
    Migration(4, "whole-document view for SQL users", """
        CREATE VIEW isotope_session_documents AS
        SELECT s.session_id, s.metadata, s.created_at, s.last_updated, s.expires_at, s.version,
               s.is_active,
               CASE WHEN s.session_data #>> '{messages,present}' = 'false'
                    THEN s.session_data - 'messages' ELSE s.session_data END
               || COALESCE((SELECT jsonb_object_agg(b.name, b.value)
                              FROM isotope_session_members b
                             WHERE b.session_id = s.session_id), '{}'::jsonb)
               || CASE WHEN s.session_data #>> '{messages,$iso}' = 'messages'
                        AND s.session_data #>> '{messages,present}' IS DISTINCT FROM 'false'
                       THEN jsonb_build_object('messages', COALESCE(
                            (SELECT jsonb_agg(m.message ORDER BY m.seq)
                               FROM isotope_messages m
                              WHERE m.session_id = s.session_id), '[]'::jsonb))
                       ELSE '{}'::jsonb END AS document
          FROM isotope_sessions s;
    """),
    Migration(5, "LangGraph checkpoints of sessions (app.adapters.langgraph)", """
        -- A LangGraph thread is an Isotope session: every row hangs off isotope_sessions, so
        -- deleting or expiring the session removes its checkpoints with it.
        CREATE TABLE isotope_lg_checkpoints (
            session_id VARCHAR(255) NOT NULL REFERENCES isotope_sessions (session_id) ON DELETE CASCADE,
            checkpoint_ns TEXT NOT NULL,
            checkpoint_id TEXT NOT NULL,
            parent_checkpoint_id TEXT,
            checkpoint JSONB NOT NULL,
            metadata JSONB NOT NULL,
            PRIMARY KEY (session_id, checkpoint_ns, checkpoint_id)
        );
        -- One row per (channel, version) a checkpoint introduced. A list channel's row holds no
        -- blob but its segments: [[epoch, start, end], ...] into isotope_lg_items.
        CREATE TABLE isotope_lg_blobs (
            session_id VARCHAR(255) NOT NULL REFERENCES isotope_sessions (session_id) ON DELETE CASCADE,
            checkpoint_ns TEXT NOT NULL,
            channel TEXT NOT NULL,
            version TEXT NOT NULL,
            type TEXT NOT NULL,
            blob BYTEA,
            segments JSONB,
            PRIMARY KEY (session_id, checkpoint_ns, channel, version)
        );
        -- List channels (messages), append-only: one row per element, written once.
        CREATE TABLE isotope_lg_items (
            session_id VARCHAR(255) NOT NULL REFERENCES isotope_sessions (session_id) ON DELETE CASCADE,
            checkpoint_ns TEXT NOT NULL,
            channel TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            pos INTEGER NOT NULL,
            type TEXT NOT NULL,
            blob BYTEA NOT NULL,
            PRIMARY KEY (session_id, checkpoint_ns, channel, epoch, pos)
        );
        CREATE TABLE isotope_lg_writes (
            session_id VARCHAR(255) NOT NULL REFERENCES isotope_sessions (session_id) ON DELETE CASCADE,
            checkpoint_ns TEXT NOT NULL,
            checkpoint_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            channel TEXT NOT NULL,
            type TEXT NOT NULL,
            blob BYTEA,
            task_path TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (session_id, checkpoint_ns, checkpoint_id, task_id, idx)
        );
    """),
    Migration(6, "full-text search over message text (the console's search)", r"""
        -- Building the index reads every stored message: no statement timeout for this migration.
        SET LOCAL statement_timeout = 0;
        -- The searchable text of one stored message: its content when that is a string, the text
        -- parts of a list content, at most 50,000 characters (a tsvector must stay under 1 MB).
        -- Runs of CJK characters are spaced out so that each character is a lexeme (they are
        -- written without spaces; a query phrase of characters then matches where they stand
        -- together). The ranges are app.store.browse.CJK's.
        CREATE FUNCTION isotope_message_tsvector(message jsonb) RETURNS tsvector
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT to_tsvector('simple'::regconfig, regexp_replace(left(
                CASE jsonb_typeof(message -> 'content')
                    WHEN 'string' THEN message ->> 'content'
                    WHEN 'array' THEN jsonb_path_query_array(message -> 'content', '$[*].text')::text
                    ELSE '' END, 50000),
                '([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f])', ' \1 ', 'g'))
        $$;
        CREATE INDEX idx_isotope_messages_text ON isotope_messages USING gin (isotope_message_tsvector(message));
    """),
    Migration(7, "LangGraph checkpoints: list segments in the checkpoint row, cascade by trigger", """
        -- Measured per LangGraph run (3 checkpoints, 2 writes): the foreign keys' row lock on
        -- the session (FOR KEY SHARE, one WAL record and often a MultiXact per transaction) and
        -- a blobs row per list version were a fifth of the WAL. A trigger gives the same cascade;
        -- every step creates its session row if missing, so no checkpoint is left without one.
        ALTER TABLE isotope_lg_checkpoints DROP CONSTRAINT isotope_lg_checkpoints_session_id_fkey,
            ADD COLUMN lists JSONB;
        ALTER TABLE isotope_lg_blobs DROP CONSTRAINT isotope_lg_blobs_session_id_fkey,
            DROP COLUMN segments;
        ALTER TABLE isotope_lg_items DROP CONSTRAINT isotope_lg_items_session_id_fkey;
        ALTER TABLE isotope_lg_writes DROP CONSTRAINT isotope_lg_writes_session_id_fkey;
        CREATE FUNCTION isotope_lg_forget_session() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM isotope_lg_checkpoints WHERE session_id = OLD.session_id;
            DELETE FROM isotope_lg_blobs WHERE session_id = OLD.session_id;
            DELETE FROM isotope_lg_items WHERE session_id = OLD.session_id;
            DELETE FROM isotope_lg_writes WHERE session_id = OLD.session_id;
            RETURN OLD;
        END $$;
        CREATE TRIGGER isotope_lg_forget_session AFTER DELETE ON isotope_sessions
            FOR EACH ROW EXECUTE FUNCTION isotope_lg_forget_session();
    """),
)

LATEST_VERSION = MIGRATIONS[-1].version

CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS isotope_schema_version (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
    )
"""
SELECT_VERSION = "SELECT COALESCE(max(version), 0) FROM isotope_schema_version"
INSERT_VERSION = "INSERT INTO isotope_schema_version (version, name) VALUES (%s, %s)"
TAKE_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(%s)"

# What the current schema must contain; checked against the catalog by the tests and by
# `isotope doctor`.
CURRENT_SCHEMA_SUMMARY: dict[str, Any] = {
    "tables": {
        "isotope_sessions": ["session_id", "session_data", "metadata", "created_at", "last_updated",
                             "expires_at", "version", "is_active"],
        "isotope_messages": ["session_id", "seq", "message"],
        "isotope_session_members": ["session_id", "name", "value"],
        "isotope_spool_applied": ["session_id", "write_id", "applied_at", "version"],
        "isotope_schema_version": ["version", "name", "applied_at"],
        "isotope_lg_checkpoints": ["session_id", "checkpoint_ns", "checkpoint_id", "parent_checkpoint_id",
                                   "checkpoint", "metadata", "lists"],
        "isotope_lg_blobs": ["session_id", "checkpoint_ns", "channel", "version", "type", "blob"],
        "isotope_lg_items": ["session_id", "checkpoint_ns", "channel", "epoch", "pos", "type", "blob"],
        "isotope_lg_writes": ["session_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx", "channel", "type",
                              "blob", "task_path"],
    },
    "indexes": ["idx_isotope_sessions_last_updated", "idx_isotope_sessions_created_at",
                "idx_isotope_sessions_is_active", "idx_isotope_sessions_expires_at"],
    "message_indexes": ["idx_isotope_messages_text"],
    "views": ["isotope_session_documents"],
}


def schema_version(conn: psycopg.Connection[Any]) -> int | None:
    """The applied schema version; None when Isotope's tables do not exist yet."""
    exists = conn.execute("SELECT to_regclass('isotope_schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(SELECT_VERSION).fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply missing migrations; return the versions applied (empty when up to date)."""
    current = schema_version(conn)
    if current == LATEST_VERSION:
        return []
    if current is not None and current > LATEST_VERSION:
        raise MigrationError(
            f"the database schema is at version {current}, newer than this Isotope knows "
            f"({LATEST_VERSION}); upgrade Isotope"
        )
    applied: list[int] = []
    started = time.perf_counter()
    try:
        with conn.transaction():
            conn.execute(TAKE_MIGRATION_LOCK, (MIGRATION_LOCK_KEY,))
            conn.execute(CREATE_VERSION_TABLE)
            row = conn.execute(SELECT_VERSION).fetchone()
            current = int(row[0]) if row else 0
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                conn.execute(migration.sql, prepare=False)
                conn.execute(INSERT_VERSION, (migration.version, migration.name))
                applied.append(migration.version)
    except psycopg.Error as exc:
        raise MigrationError(f"could not apply schema migrations: {exc.diag.message_primary or exc}") from exc
    if applied:
        log.info("applied schema migrations %s in %.1f ms", applied, (time.perf_counter() - started) * 1e3)
    return applied
