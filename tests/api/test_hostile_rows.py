"""A row planted in PostgreSQL runs nothing when the server reads it (over HTTP, at start-up restore)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.api.server import ApiServer


def test_a_planted_class_name_runs_nothing_over_http_or_at_restore(module_database_url: str,
                                                                    tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = {"$iso": "enum", "cls": "os:system", "v": f"touch {marker}"}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ApiServer(module_database_url, data_dir, name="first")
    try:
        with server.client() as client:
            session_id = client.post("/api/sessions", json={"metadata": {"name": "victim"}}).json()["session_id"]
            with psycopg.connect(module_database_url, autocommit=True) as conn:
                conn.execute("UPDATE isotope_sessions SET metadata = %s::jsonb WHERE session_id = %s",
                             (json.dumps({"name": "victim", "evil": hostile}), session_id))
            for path in (f"/api/sessions/postgres/sessions/{session_id}", "/api/sessions/postgres/sessions"):
                response = client.get(path)
                assert response.status_code == 200, response.text
                assert f"touch {marker}" in response.text  # the value, as plain data
            assert client.post("/api/sessions/postgres/restore").status_code == 200
    finally:
        server.stop()
    assert not marker.exists(), "reading the session over HTTP ran the command"

    restarted = ApiServer(module_database_url, data_dir, name="second")  # start-up restore decodes it
    restarted.stop()
    assert not marker.exists(), "start-up restore ran the command"
    for log in (server.log(), restarted.log()):
        assert log.count("'os:system', which is not registered") == 1, log
