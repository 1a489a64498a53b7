"""``GET /api/sessions/{id}/export`` and ``POST /api/sessions/{id}/fork`` against a real ``isotope serve``."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from app.core import transfer
from app.core.postgres_session_manager import SessionManager
from app.store import codec
from tests.api.server import assert_error
from tests.helpers import make_settings


@pytest.fixture(scope="module")
def manager(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionManager]:
    data_dir: Path = tmp_path_factory.mktemp("seed")
    with SessionManager(make_settings(module_database_url, data_dir), use_postgres=True) as mgr:
        yield mgr


def seed(manager: SessionManager, messages: int = 0) -> str:
    session_id = f"tx/{uuid.uuid4().hex[:10]}"  # a '/' in the id, as the guide allows
    history = [HumanMessage("add task: water", id="h1"),
               AIMessage("", id="a1", tool_calls=[{"id": "c1", "name": "add_task", "args": {"title": "water"}}]),
               ToolMessage("Added task #1", tool_call_id="c1", id="t1"), AIMessage("done \x00", id="a2")]
    history += [HumanMessage(f"m{i}") for i in range(messages)]
    manager.save_session(session_id, {"messages": history, "tasks": [{"id": 1, "title": "water"}],
                                      "files": {"b.bin": b"\x00\x01"}}, metadata={"name": "会话"},
                         expires_in_hours=10)
    return session_id


def path(session_id: str, what: str) -> str:
    return f"/api/sessions/{quote(session_id, safe='')}/{what}"


def test_export_returns_the_line_the_cli_writes(client: httpx.Client, manager: SessionManager) -> None:
    sid = seed(manager, messages=1_200)  # long enough to stream its messages
    response = client.get(path(sid, "export"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    body = response.json()
    assert body["session_id"] == sid and body["format"] == "isotope.session" and len(body["messages"]) == 1_204
    out = io.StringIO()
    transfer.export_sessions(manager, out, transfer.Selection([sid]))
    assert response.text == out.getvalue()
    assert codec.loads(response.text)["messages"][3].content == "done \x00"


def test_export_of_unknown_or_deleted_sessions(client: httpx.Client, manager: SessionManager) -> None:
    assert_error(client.get(path("nobody-" + uuid.uuid4().hex, "export")), 404, "session_not_found")
    sid = seed(manager)
    manager.delete_session(sid)
    assert_error(client.get(path(sid, "export")), 404, "session_not_found")
    assert client.get(path(sid, "export"), params={"include_inactive": "true"}).json()["is_active"] is False


def test_fork_creates_an_independent_copy(client: httpx.Client, manager: SessionManager) -> None:
    sid = seed(manager)
    response = client.post(path(sid, "fork"), json={"at_message": 2, "metadata": {"name": "branch"}})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["forked_from"] == sid and body["message_count"] == 2 and body["metadata"] == {"name": "branch"}
    assert body["version"] == 1 and response.headers["location"].endswith(quote(body["session_id"], safe=""))
    turn = client.post(path(body["session_id"], "messages"), json={"content": "list tasks"})
    assert turn.status_code == 200, turn.text
    assert manager.session_info(sid)["message_count"] == 4  # type: ignore[index]
    assert manager.session_info(body["session_id"])["message_count"] > 2  # type: ignore[index]
    plain = client.post(path(sid, "fork"))
    assert plain.status_code == 201 and plain.json()["message_count"] == 4


def test_fork_errors(client: httpx.Client, manager: SessionManager) -> None:
    sid = seed(manager)
    assert_error(client.post(path("nobody-" + uuid.uuid4().hex, "fork")), 404, "session_not_found")
    taken = client.post(path(sid, "fork"), json={"new_session_id": sid})
    assert_error(taken, 409, "session_exists")
    past = assert_error(client.post(path(sid, "fork"), json={"at_message": 99}), 422, "invalid_input")
    assert past["field"] == "at_message" and "past the 4 messages" in past["message"]
    assert_error(client.post(path(sid, "fork"), json={"at_message": -1}), 422, "invalid_input")
    assert_error(client.post(path(sid, "fork"), json={"at_message": "2"}), 422, "invalid_input")
    assert_error(client.post(path(sid, "fork"), json={"colour": "red"}), 422, "invalid_input")
