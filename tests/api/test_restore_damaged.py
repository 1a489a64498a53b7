"""A damaged row does not stop the server's restores: at start-up and on request, it is reported and
every other session is restored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from app.core.postgres_session_manager import SessionManager
from tests.api.server import ApiServer
from tests.helpers import make_settings

DAMAGED = {
    "bad-string": """UPDATE isotope_sessions SET session_data = '"text"' WHERE session_id = 'bad-string'""",
    "bad-array": "UPDATE isotope_sessions SET session_data = '[]' WHERE session_id = 'bad-array'",
}
HEALTHY = ["good-1", "good-2"]


@pytest.fixture(scope="module")
def server(module_database_url: str, module_data_dir: Path) -> Iterator[ApiServer]:
    with SessionManager(make_settings(module_database_url, module_data_dir), use_postgres=True) as manager:
        for sid in [*HEALTHY, *DAMAGED]:
            manager.save_session(sid, {"messages": [HumanMessage("hi"), AIMessage("hello")]})
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        for statement in DAMAGED.values():
            conn.execute(statement)
    srv = ApiServer(module_database_url, module_data_dir, config={"api": {"cleanup_interval_s": 3600}})
    yield srv
    srv.stop()


def check(result: dict) -> None:
    assert result["restored_count"] == len(HEALTHY), result
    assert sorted(result["failed_session_ids"]) == sorted(DAMAGED) and result["failed_count"] == len(DAMAGED)
    for error in result["errors"]:
        assert error["session_id"] in DAMAGED and "not an object" in error["error"]


def test_start_up_and_requested_restores_report_damaged_rows(server: ApiServer) -> None:
    with server.client() as client:
        at_start = client.get("/api/sessions/restored").json()
        check(at_start)
        assert sorted(at_start["session_ids"]) == sorted(HEALTHY)
        check(client.post("/api/sessions/postgres/restore").json())
        check(client.post("/api/sessions/restore").json())
        response = client.get("/api/sessions/postgres/sessions/bad-string")
        # A row the server cannot read is its own fault, not the client's: 500, without details.
        assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
