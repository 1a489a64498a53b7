"""The console's page and routes on a real ``isotope serve``: served files, headers, the token,
search, deleted sessions, restore, overview."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.server import ApiServer, assert_error

TOKEN = "console-test-token-0123456789"


@pytest.fixture(scope="module")
def locked(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server that requires the bearer token."""
    srv = ApiServer(module_database_url, tmp_path_factory.mktemp("console-locked"), name="locked",
                    config={"api": {"cleanup_interval_s": 3600}}, ISOTOPE_API_TOKEN=TOKEN)
    yield srv
    srv.stop()


def _create(client: httpx.Client, **metadata: str) -> str:
    response = client.post("/api/sessions", json={"metadata": metadata})
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


def _turn(client: httpx.Client, sid: str, content: str) -> None:
    response = client.post(f"/api/sessions/{sid}/messages", json={"content": content})
    assert response.status_code == 200, response.text


def test_the_page_and_its_files_are_served_with_a_strict_policy(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert 'src="/console/console.js"' in page.text
    for name, kind in [("console.js", "text/javascript"), ("api.js", "text/javascript"), ("dom.js", "text/javascript"),
                       ("console.css", "text/css"), ("icon.svg", "image/svg+xml")]:
        asset = client.get(f"/console/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
    assert client.get("/console/index.html").status_code == 404
    assert client.get("/console/..%2Froutes_console.py").status_code == 404
    assert client.get("/console/auth.json").json() == {"token_required": False}


def test_no_script_builds_html_from_strings() -> None:
    """Stored text reaches the page only as text nodes: the scripts never assign HTML."""
    folder = Path(__file__).resolve().parents[2] / "app" / "api" / "console"
    for script in folder.glob("*.js"):
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, f"{script.name} uses {sink}"


def test_search_and_listing(client: httpx.Client) -> None:
    garden = _create(client, name="Garden", user_id="gardener")
    _turn(client, garden, "add task: water the plants")
    chinese = _create(client, name="新会话", user_id="user123")
    _turn(client, chinese, "请给植物浇水")

    found = client.get("/api/console/sessions", params={"q": "plants"}).json()
    assert [s["session_id"] for s in found["sessions"]] == [garden]
    assert found["sessions"][0]["matched_messages"] is True and found["messages_searched"] is True
    assert [s["session_id"] for s in client.get("/api/console/sessions", params={"q": "植物浇水"}).json()["sessions"]] \
        == [chinese]
    assert [s["session_id"] for s in client.get("/api/console/sessions", params={"q": "GARDENER"}).json()["sessions"]] \
        == [garden]
    listing = client.get("/api/console/sessions", params={"limit": 1}).json()
    assert listing["total"] >= 2 and listing["has_more"] is True and len(listing["sessions"]) == 1
    assert listing["sessions"][0]["session_id"] == chinese  # newest first

    assert_error(client.get("/api/console/sessions", params={"limit": 0}), 422, "invalid_input")
    assert_error(client.get("/api/console/sessions", params={"q": "x" * 501}), 422, "invalid_input")


def test_a_deleted_session_is_shown_restored_and_erased(client: httpx.Client) -> None:
    sid = _create(client, name="<script>alert('x')</script>")
    _turn(client, sid, "save file notes.txt: <img src=x onerror=alert(1)>")
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    assert_error(client.get(f"/api/sessions/postgres/sessions/{sid}"), 404, "session_not_found")

    seen = client.get(f"/api/console/sessions/{sid}").json()
    assert seen["is_active"] is False and seen["complete"] is True
    assert seen["metadata"]["name"] == "<script>alert('x')</script>"
    assert seen["files"] == {"notes.txt": "<img src=x onerror=alert(1)>"}
    assert [m["type"] for m in seen["messages"]] == ["human", "ai", "tool", "ai"]
    hidden = client.get("/api/console/sessions", params={"q": "script"}).json()["sessions"]
    assert sid not in [s["session_id"] for s in hidden]
    shown = client.get("/api/console/sessions", params={"q": "script", "include_inactive": "true"}).json()["sessions"]
    assert sid in [s["session_id"] for s in shown]

    restored = client.post(f"/api/console/sessions/{sid}/restore")
    assert restored.status_code == 200 and restored.json() == {"session_id": sid, "restored": True}
    assert client.get(f"/api/sessions/postgres/sessions/{sid}").json()["is_active"] is True

    assert client.delete(f"/api/sessions/{sid}", params={"hard": "true"}).status_code == 200
    assert_error(client.get(f"/api/console/sessions/{sid}"), 404, "session_not_found")
    assert_error(client.post(f"/api/console/sessions/{sid}/restore"), 404, "session_not_found")


def test_session_ids_with_slashes_work(client: httpx.Client) -> None:
    response = client.post("/api/sessions", json={"session_id": "team/a b", "metadata": {"name": "slashed"}})
    assert response.status_code == 201
    assert client.get("/api/console/sessions/team%2Fa%20b").json()["session_id"] == "team/a b"
    assert client.post("/api/console/sessions/team%2Fa%20b/restore").status_code == 200


def test_overview(client: httpx.Client) -> None:
    sid = _create(client, name="counted")
    _turn(client, sid, "hello")
    body = client.get("/api/console/overview").json()
    assert body["statistics"]["total_sessions"] >= 1
    assert body["store"]["backend"] == "postgres" and body["store"]["fallback_active"] is False
    assert body["turns"]["total"] >= 1 and body["turns"]["in_window"] >= 1
    assert body["housekeeping"]["created_per_day"][-1]["sessions"] >= 1


def test_the_console_routes_need_the_token(locked: ApiServer) -> None:
    with locked.client() as anonymous:
        assert anonymous.get("/").status_code == 200  # the page itself carries no data
        assert anonymous.get("/console/auth.json").json() == {"token_required": True}
        for method, path in [("GET", "/api/console/sessions"), ("GET", "/api/console/overview"),
                             ("GET", "/api/console/sessions/x"), ("POST", "/api/console/sessions/x/restore")]:
            assert_error(anonymous.request(method, path), 401, "unauthorized")
    with locked.client(token="wrong") as wrong:
        assert_error(wrong.get("/api/console/sessions"), 401, "unauthorized")
    with locked.client(token=TOKEN) as signed_in:
        assert signed_in.get("/api/console/sessions").status_code == 200
