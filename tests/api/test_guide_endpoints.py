"""The guide's eight endpoints, at exactly its paths, against a real ``isotope serve``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from app.core.postgres_session_manager import SessionManager
from tests.api.server import assert_error
from tests.helpers import make_settings


@pytest.fixture(scope="module")
def manager(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionManager]:
    """A manager in the test process on the server's database (to seed and to check)."""
    data_dir: Path = tmp_path_factory.mktemp("seed")
    with SessionManager(make_settings(module_database_url, data_dir), use_postgres=True) as mgr:
        yield mgr


def seed(manager: SessionManager, **metadata: object) -> str:
    session_id = f"guide-{uuid.uuid4().hex[:10]}"
    messages = [
        HumanMessage("add task: water the plants", id="h1"),
        AIMessage("", id="a1", tool_calls=[{"id": "c1", "name": "add_task", "args": {"title": "water the plants"}}]),
        ToolMessage("Added task #1", tool_call_id="c1", name="add_task", id="t1"),
        AIMessage("Added task #1: water the plants", id="a2"),
    ]
    data = {"messages": messages, "tasks": [{"id": 1, "title": "water the plants", "done": False}],
            "files": {"notes.txt": "hello"}, "metadata": dict(metadata)}
    assert manager.save_session(session_id, data, metadata={"name": "我的会话", **metadata})
    return session_id


def test_list_sessions_pages_and_counts(client: httpx.Client, manager: SessionManager) -> None:
    ids = {seed(manager, batch="list") for _ in range(3)}
    body = client.get("/api/sessions/postgres/sessions?limit=50&offset=0&include_inactive=false").json()
    assert set(body) == {"sessions", "limit", "offset", "total"}
    assert (body["limit"], body["offset"]) == (50, 0)
    listed = {s["session_id"]: s for s in body["sessions"]}
    assert ids <= set(listed)
    item = listed[next(iter(ids))]
    assert item["metadata"]["name"] == "我的会话"
    assert item["message_count"] == 4 and item["version"] == 1 and item["is_active"] is True
    assert body["total"] >= 3
    page = client.get("/api/sessions/postgres/sessions", params={"limit": 1, "offset": 1}).json()
    assert len(page["sessions"]) == 1 and page["total"] == body["total"]


def test_list_includes_inactive_only_when_asked(client: httpx.Client, manager: SessionManager) -> None:
    gone = seed(manager)
    manager.delete_session(gone, soft_delete=True)
    active = client.get("/api/sessions/postgres/sessions", params={"limit": 10_000}).json()
    everything = client.get("/api/sessions/postgres/sessions",
                            params={"limit": 10_000, "include_inactive": "true"}).json()
    assert gone not in {s["session_id"] for s in active["sessions"]}
    assert gone in {s["session_id"] for s in everything["sessions"]}
    assert everything["total"] > active["total"]


@pytest.mark.parametrize("query, field", [("limit=-1", "query.limit"), ("limit=10001", "query.limit"),
                                          ("offset=-5", "query.offset"), ("limit=ten", "query.limit"),
                                          ("include_inactive=maybe", "query.include_inactive")])
def test_list_rejects_bad_paging(client: httpx.Client, query: str, field: str) -> None:
    error = assert_error(client.get(f"/api/sessions/postgres/sessions?{query}"), 422, "invalid_input")
    assert error["field"] == field


def test_one_session_with_messages_tasks_files(client: httpx.Client, manager: SessionManager) -> None:
    session_id = seed(manager, user_id="user123")
    body = client.get(f"/api/sessions/postgres/sessions/{session_id}").json()
    assert body["session_id"] == session_id and body["version"] == 1
    assert body["metadata"] == {"name": "我的会话", "user_id": "user123"}
    assert [m["type"] for m in body["messages"]] == ["human", "ai", "tool", "ai"]
    assert body["messages"][1]["tool_calls"] == [{"id": "c1", "name": "add_task",
                                                  "args": {"title": "water the plants"}}]
    assert body["messages"][2]["tool_call_id"] == "c1"
    assert body["tasks"] == [{"id": 1, "title": "water the plants", "done": False}]
    assert body["files"] == {"notes.txt": "hello"}
    for stamp in ("created_at", "last_updated"):
        assert body[stamp].endswith("+00:00")


def test_one_session_unknown_is_404_and_bad_id_422(client: httpx.Client) -> None:
    assert_error(client.get("/api/sessions/postgres/sessions/no-such-session"), 404, "session_not_found")
    error = assert_error(client.get("/api/sessions/postgres/sessions/" + "x" * 256), 422, "invalid_input")
    assert error["field"] == "path.session_id" and "255" in error["message"]
    assert_error(client.get("/api/sessions/postgres/sessions/a%00b"), 422, "invalid_input")


def test_session_ids_with_slashes_and_unicode(client: httpx.Client, manager: SessionManager) -> None:
    session_id = f"team/α β/{uuid.uuid4().hex[:6]}"
    manager.save_session(session_id, {"messages": [HumanMessage("hi")]})
    response = client.get("/api/sessions/postgres/sessions/" + quote(session_id, safe=""))
    assert response.status_code == 200, response.text
    assert response.json()["session_id"] == session_id


def test_statistics(client: httpx.Client, manager: SessionManager) -> None:
    seed(manager)
    stats = client.get("/api/sessions/postgres/statistics").json()
    assert stats["total_sessions"] >= 1 and stats["active_sessions"] >= 1
    assert isinstance(stats["avg_messages_per_session"], int | float)
    assert stats["backend"] == "postgres" and stats["fallback_active"] is False


def test_restore_all_sessions(client: httpx.Client, manager: SessionManager) -> None:
    seed(manager)
    result = client.post("/api/sessions/postgres/restore").json()
    assert result["restored_count"] >= 1 and result["failed_count"] == 0
    assert result["failed_session_ids"] == [] and result["backend"] == "postgres"
    assert "sessions" not in result  # counts, not the data


def test_cleanup_expired(client: httpx.Client, manager: SessionManager) -> None:
    expired = f"guide-exp-{uuid.uuid4().hex[:8]}"
    manager.save_session(expired, {"messages": []}, expires_in_hours=0)
    assert client.post("/api/sessions/postgres/cleanup").json()["cleaned_count"] >= 1
    info = manager.session_info(expired, include_inactive=True)
    assert info is not None and info["is_active"] is False
    assert client.post("/api/sessions/postgres/cleanup?hard_delete=true").json()["cleaned_count"] >= 1
    assert manager.session_info(expired, include_inactive=True) is None
    assert_error(client.post("/api/sessions/postgres/cleanup?inactive_for_hours=-1"), 422)


def test_connection_test(client: httpx.Client) -> None:
    result = client.get("/api/sessions/postgres/connection/test").json()
    assert result["ok"] is True and result["backend"] == "postgres"
    assert result["server_version"] and result["latency_ms"] >= 0
    assert result["fallback_active"] is False


def test_restored_at_startup_and_again(client: httpx.Client, manager: SessionManager) -> None:
    at_start = client.get("/api/sessions/restored").json()
    assert at_start["trigger"] == "startup" and at_start["restored_at"]
    assert set(at_start) >= {"restored_count", "session_ids", "failed_count", "failed_session_ids"}
    new = seed(manager)
    again = client.post("/api/sessions/restore").json()
    assert again["trigger"] == "manual" and again["restored_count"] >= 1
    assert new in again["session_ids"] and len(again["session_ids"]) == again["restored_count"]
    assert client.get("/api/sessions/restored").json() == again


def test_guide_routes_reject_other_methods(client: httpx.Client) -> None:
    error = assert_error(client.put("/api/sessions/postgres/statistics"), 405, "method_not_allowed")
    assert "method" in error["message"].lower()
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
