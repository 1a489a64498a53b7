"""The chat API: create, one turn as JSON or as Server-Sent Events, read the messages, delete."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.api.server import ApiServer, assert_error, sse_events

SSE = {"Accept": "text/event-stream"}


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/sessions", json={"metadata": {"name": "新会话", "user_id": "user123"}, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_create_session(client: httpx.Client) -> None:
    response = client.post("/api/sessions", json={"metadata": {"name": "新会话", "user_id": "user123"}})
    assert response.status_code == 201
    info = response.json()
    assert info["metadata"] == {"name": "新会话", "user_id": "user123"}
    assert info["version"] == 1 and info["message_count"] == 0 and info["is_active"] is True
    assert response.headers["location"] == f"/api/sessions/postgres/sessions/{info['session_id']}"
    stored = client.get(response.headers["location"]).json()
    assert stored["messages"] == [] and stored["tasks"] == [] and stored["files"] == {}


def test_create_with_own_id_and_expiry(client: httpx.Client) -> None:
    session_id = f"mine-{uuid.uuid4().hex[:8]}"
    info = create(client, session_id=session_id, expires_in_hours=2)
    assert info["session_id"] == session_id and info["expires_at"] is not None
    error = assert_error(client.post("/api/sessions", json={"session_id": session_id}), 409, "session_exists")
    assert "already exists" in error["message"]
    client.delete(f"/api/sessions/{session_id}")  # soft-deleted ids stay taken
    assert_error(client.post("/api/sessions", json={"session_id": session_id}), 409, "session_exists")


def test_create_rejects_bad_bodies(client: httpx.Client) -> None:
    cases = [({"metadata": "not a dict"}, "body.metadata"), ({"expires_in_hours": -1}, "body.expires_in_hours"),
             ({"session_id": ""}, "body.session_id"), ({"session_id": "a\x00b"}, "body.session_id"),
             ({"surprise": 1}, "body.surprise")]
    for body, field in cases:
        assert assert_error(client.post("/api/sessions", json=body), 422, "invalid_input")["field"] == field
    bad_json = client.post("/api/sessions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(bad_json, 422, "invalid_input")


def test_json_turn(client: httpx.Client) -> None:
    session_id = create(client)["session_id"]
    response = client.post(f"/api/sessions/{session_id}/messages", json={"content": "add task: water the plants"})
    assert response.status_code == 200, response.text
    turn = response.json()
    assert turn["session_id"] == session_id and turn["version"] == 2 and turn["message_count"] == 4
    assert "water the plants" in turn["response"]
    kinds = [e["type"] for e in turn["events"]]
    assert kinds == ["tool_call", "tool_result", "message", "done"]
    second = client.post(f"/api/sessions/{session_id}/messages", json={"content": "hello"}).json()
    assert second["version"] == 3 and "Turn 2" in second["response"]


def test_streamed_turn_as_a_client_reads_it(client: httpx.Client) -> None:
    session_id = create(client)["session_id"]
    with client.stream("POST", f"/api/sessions/{session_id}/messages", json={"content": "add task: buy milk"},
                       headers=SSE) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    names = [name for name, _ in events]
    assert names[:2] == ["tool_call", "tool_result"] and names[-2:] == ["message", "done"]
    assert "token" in names
    for name, data in events:
        assert data["type"] == name and data["session_id"] == session_id
    tokens = "".join(data["content"] for name, data in events if name == "token")
    message = next(data for name, data in events if name == "message")
    assert tokens == message["content"] and "buy milk" in tokens
    assert events[-1][1]["version"] == 2
    stored = client.get(f"/api/sessions/postgres/sessions/{session_id}").json()
    assert stored["version"] == 2 and stored["tasks"][0]["title"] == "buy milk"


def test_stream_of_unknown_session_is_a_json_404(client: httpx.Client) -> None:
    response = client.post("/api/sessions/nobody-here/messages", json={"content": "hi"}, headers=SSE)
    assert_error(response, 404, "session_not_found")


def test_turn_rejects_blank_content(client: httpx.Client) -> None:
    session_id = create(client)["session_id"]
    for body in ({"content": ""}, {"content": "   "}, {}, {"content": 5}):
        error = assert_error(client.post(f"/api/sessions/{session_id}/messages", json=body), 422, "invalid_input")
        assert error["field"] == "body.content"


def test_concurrent_turns_on_one_session_all_land(client: httpx.Client, server: ApiServer) -> None:
    session_id = create(client)["session_id"]

    def turn(i: int) -> dict[str, Any]:
        with server.client() as c:
            response = c.post(f"/api/sessions/{session_id}/messages", json={"content": f"message {i}"},
                              headers=SSE if i % 2 else {})
            assert response.status_code == 200, response.text
            if i % 2:
                return list(sse_events(response))[-1][1]
            return dict(response.json())

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(turn, range(6)))
    assert sorted(r["version"] for r in results) == [2, 3, 4, 5, 6, 7]
    messages = client.get(f"/api/sessions/{session_id}/messages").json()
    assert messages["message_count"] == 12
    said = [m["content"] for m in messages["messages"] if m["type"] == "human"]
    assert sorted(said) == [f"message {i}" for i in range(6)]


def test_list_messages_with_paging(client: httpx.Client) -> None:
    session_id = create(client)["session_id"]
    client.post(f"/api/sessions/{session_id}/messages", json={"content": "one"})
    client.post(f"/api/sessions/{session_id}/messages", json={"content": "two"})
    everything = client.get(f"/api/sessions/{session_id}/messages").json()
    assert everything["message_count"] == 4 and everything["version"] == 3
    assert [m["type"] for m in everything["messages"]] == ["human", "ai", "human", "ai"]
    page = client.get(f"/api/sessions/{session_id}/messages", params={"offset": 2, "limit": 1}).json()
    assert page["offset"] == 2 and page["messages"] == everything["messages"][2:3]
    assert_error(client.get("/api/sessions/nobody-here/messages"), 404, "session_not_found")


def test_delete_soft_then_hard(client: httpx.Client) -> None:
    session_id = create(client)["session_id"]
    response = client.delete(f"/api/sessions/{session_id}")
    assert response.json() == {"session_id": session_id, "deleted": True, "hard": False}
    assert_error(client.get(f"/api/sessions/{session_id}/messages"), 404, "session_not_found")
    assert_error(client.post(f"/api/sessions/{session_id}/messages", json={"content": "hi"}), 404)
    listed = client.get("/api/sessions/postgres/sessions", params={"include_inactive": True, "limit": 10_000})
    assert session_id in {s["session_id"] for s in listed.json()["sessions"]}
    assert client.delete(f"/api/sessions/{session_id}", params={"hard": True}).json()["hard"] is True
    listed = client.get("/api/sessions/postgres/sessions", params={"include_inactive": True, "limit": 10_000})
    assert session_id not in {s["session_id"] for s in listed.json()["sessions"]}
    assert_error(client.delete(f"/api/sessions/{session_id}", params={"hard": True}), 404, "session_not_found")


def test_odd_values_round_trip_or_get_422(client: httpx.Client) -> None:
    raw = {"content-type": "application/json"}
    lone = client.post("/api/sessions", content=b'{"metadata": {"a": "x\\ud800y", "\\u0000": 1}}', headers=raw)
    assert lone.status_code == 201, lone.text
    stored = client.get(lone.headers["location"]).json()  # lone surrogates arrive as JSON escapes
    assert stored["metadata"] == {"a": "x\ud800y", "\x00": 1}
    deep: Any = 1
    for _ in range(200):
        deep = {"a": deep}
    error = assert_error(client.post("/api/sessions", json={"metadata": deep}), 422, "invalid_input")
    assert error["field"] == "body.metadata" and "64 levels" in error["message"]
    bad_text = client.post(f"/api/sessions/{stored['session_id']}/messages", content=b'{"content": "\\udc00"}',
                           headers=raw)
    assert assert_error(bad_text, 422, "invalid_input")["field"] == "body.content"


def test_no_lax_coercion_of_bodies(client: httpx.Client) -> None:
    for body, field in (({"expires_in_hours": False}, "body.expires_in_hours"),
                        ({"expires_in_hours": "2"}, "body.expires_in_hours"), ({"session_id": 5}, "body.session_id")):
        assert assert_error(client.post("/api/sessions", json=body), 422)["field"] == field
    assert create(client, expires_in_hours=2)["expires_at"] is not None  # an integer is a number
