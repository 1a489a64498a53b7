"""The schema: the guide's table exactly, migrations that agree with the current schema."""

from __future__ import annotations

import psycopg

from app.store.schema import CURRENT_SCHEMA_SUMMARY, LATEST_VERSION, MIGRATIONS, migrate, schema_version

GUIDE_COLUMNS = {
    "session_id": ("character varying", 255, "NO", None),
    "session_data": ("jsonb", None, "NO", None),
    "metadata": ("jsonb", None, "YES", "'{}'::jsonb"),
    "created_at": ("timestamp with time zone", None, "YES", "CURRENT_TIMESTAMP"),
    "last_updated": ("timestamp with time zone", None, "YES", "CURRENT_TIMESTAMP"),
    "expires_at": ("timestamp with time zone", None, "YES", None),
    "version": ("integer", None, "YES", "1"),
    "is_active": ("boolean", None, "YES", "true"),
}


def test_the_guides_table_exactly(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_name = 'isotope_sessions' ORDER BY ordinal_position"
        ).fetchall()
        pk = conn.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = 'isotope_sessions'::regclass AND i.indisprimary").fetchall()
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'isotope_sessions'")}
    assert [r[0] for r in rows] == list(GUIDE_COLUMNS)
    assert {r[0]: tuple(r[1:]) for r in rows} == GUIDE_COLUMNS
    assert pk == [("session_id",)]
    assert indexes == {"isotope_sessions_pkey", *CURRENT_SCHEMA_SUMMARY["indexes"]}


def test_migrations_produce_the_current_schema_and_are_idempotent(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        assert schema_version(conn) is None
        assert migrate(conn) == [m.version for m in MIGRATIONS]
        assert migrate(conn) == []
        assert schema_version(conn) == LATEST_VERSION
        for table, columns in CURRENT_SCHEMA_SUMMARY["tables"].items():
            found = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                (table,))]
            assert found == columns, table
        views = [r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE viewname LIKE 'isotope%'")]
        assert views == CURRENT_SCHEMA_SUMMARY["views"]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'isotope%'")}
        assert tables == set(CURRENT_SCHEMA_SUMMARY["tables"])
        message_indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'isotope_messages'")}
        assert message_indexes == {"isotope_messages_pkey", *CURRENT_SCHEMA_SUMMARY["message_indexes"]}


def test_every_table_carries_session_id(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables"
            " WHERE tablename LIKE 'isotope%' AND tablename <> 'isotope_schema_version'")]
        for table in tables:
            cols = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,))]
            assert "session_id" in cols, table


def test_migrations_are_append_only_and_ordered() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_the_document_view_gives_whole_sessions(manager, database_url: str) -> None:
    from langchain_core.messages import HumanMessage

    manager.save_session("s", {"messages": [HumanMessage("hi")], "tasks": [1], "files": {"big": "x" * 5000}})
    manager.save_session("n", {"tasks": []})
    with psycopg.connect(database_url) as conn:
        docs = dict(conn.execute("SELECT session_id, document FROM isotope_session_documents").fetchall())
    assert docs["s"]["messages"] == [{"$iso": "msg", "type": "human", "content": "hi"}]
    assert docs["s"]["files"] == {"big": "x" * 5000} and docs["s"]["tasks"] == [1]
    assert docs["n"] == {"tasks": []}
