"""The schema distributes by ``session_id`` (Citus): checked against the catalog of a migrated database.

Citus splits a distributed table into shards by one column and keeps the shards of co-located
tables with the same value together. For Isotope that column is ``session_id``: all of one
session's rows then live on one node, every write of a turn is a single-node transaction, and
nothing a session does waits on another node. Citus requires, and this test checks:

* every table has a ``session_id`` column of one and the same type (co-location), except the
  tables named in :data:`REFERENCE_TABLES` (copied whole to every node);
* every primary key, unique constraint, unique index and exclusion constraint includes it
  (uniqueness is enforced per shard);
* every foreign key pairs ``session_id`` with the referenced table's ``session_id`` (a row never
  refers to another session's row, which could be on another node).

The commands are in the README ("Running past one machine").
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

REFERENCE_TABLES = {
    "isotope_schema_version": "which migrations ran: a handful of rows, read at start, the same everywhere",
}

TABLES = """
    SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname LIKE 'isotope%%'
     ORDER BY c.relname
"""
SESSION_COLUMN = """
    SELECT attnum, format_type(atttypid, atttypmod) FROM pg_attribute
     WHERE attrelid = %s AND attname = 'session_id' AND NOT attisdropped
"""
CONSTRAINTS = """
    SELECT conname, contype, conkey, confrelid, confkey FROM pg_constraint
     WHERE conrelid = %s AND contype IN ('p', 'u', 'x', 'f')
"""
UNIQUE_INDEXES = """
    SELECT i.indexrelid::regclass::text, i.indkey::int2[] FROM pg_index i
     WHERE i.indrelid = %s AND i.indisunique
       AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)  -- checked above
"""


def distribution_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """Everything in the current schema's isotope tables that would stop distribution by session_id."""
    problems: list[str] = []
    session_attnum: dict[int, int] = {}
    types: dict[str, str] = {}
    tables = conn.execute(TABLES).fetchall()
    for oid, name in tables:
        row = conn.execute(SESSION_COLUMN, (oid,)).fetchone()
        if row is not None:
            session_attnum[oid] = row[0]
            types[name] = row[1]
        elif name not in REFERENCE_TABLES:
            problems.append(f"{name}: no session_id column (distribute it by session_id, or make it a reference table)")
    if len(set(types.values())) > 1:
        problems.append(f"session_id has different types, so the tables cannot be co-located: {types}")
    for oid, name in tables:
        if oid not in session_attnum:
            continue
        key = session_attnum[oid]
        for conname, contype, conkey, confrelid, confkey in conn.execute(CONSTRAINTS, (oid,)).fetchall():
            if contype in ("p", "u", "x") and key not in conkey:
                problems.append(f"{name}.{conname}: a unique key without session_id")
            if contype == "f":
                pairs = dict(zip(conkey, confkey, strict=True))
                if confrelid not in session_attnum or pairs.get(key) != session_attnum[confrelid]:
                    problems.append(f"{name}.{conname}: a foreign key that does not pair session_id with "
                                    "session_id (it could point at another session's row)")
        for index, columns in conn.execute(UNIQUE_INDEXES, (oid,)).fetchall():
            if key not in columns:
                problems.append(f"{name}: unique index {index} without session_id")
    return problems


def test_every_isotope_table_distributes_by_session_id(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        names = [r[1] for r in conn.execute(TABLES).fetchall()]
        assert "isotope_sessions" in names and "isotope_messages" in names
        assert distribution_problems(conn) == []


def test_the_check_finds_what_would_stop_distribution(database_url: str) -> None:
    """The check itself: tables a careless migration could add are each reported."""
    with psycopg.connect(database_url) as conn:
        conn.execute("""
            CREATE TABLE isotope_bad_pk (id BIGINT PRIMARY KEY, session_id VARCHAR(255) NOT NULL);
            CREATE TABLE isotope_bad_fk (
                session_id VARCHAR(255) NOT NULL, other_session VARCHAR(255) NOT NULL
                    REFERENCES isotope_sessions (session_id),
                n INT NOT NULL, PRIMARY KEY (session_id, n));
            CREATE TABLE isotope_no_key (name TEXT);
            CREATE TABLE isotope_bad_type (session_id TEXT NOT NULL, PRIMARY KEY (session_id));
            CREATE UNIQUE INDEX isotope_bad_unique ON isotope_messages (seq, message);
        """)
        problems = distribution_problems(conn)
        conn.rollback()
    text = "\n".join(problems)
    assert "isotope_bad_pk.isotope_bad_pk_pkey: a unique key without session_id" in text
    assert "isotope_bad_fk.isotope_bad_fk_other_session_fkey: a foreign key" in text
    assert "isotope_no_key: no session_id column" in text
    assert "session_id has different types" in text
    assert "unique index isotope_bad_unique without session_id" in text
    assert len(problems) == 5, problems
    # Nothing was left behind by the check.
    with psycopg.connect(database_url) as conn:
        left = conn.execute(sql.SQL("SELECT to_regclass({})").format(sql.Literal("isotope_bad_pk"))).fetchone()
    assert left == (None,)
