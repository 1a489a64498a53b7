"""Bearer token, request-size limit, and no secret, SQL or traceback in any response or log line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.api.server import ApiServer, assert_error
from tests.helpers import free_port

TOKEN = "tok-3f9a-do-not-leak-me"
LIMIT = 4096
PROTECTED = [
    ("GET", "/api/sessions/postgres/sessions"), ("GET", "/api/sessions/postgres/sessions/abc"),
    ("GET", "/api/sessions/postgres/statistics"), ("POST", "/api/sessions/postgres/restore"),
    ("POST", "/api/sessions/postgres/cleanup"), ("GET", "/api/sessions/postgres/connection/test"),
    ("GET", "/api/sessions/restored"), ("POST", "/api/sessions/restore"), ("POST", "/api/sessions"),
    ("POST", "/api/sessions/abc/messages"), ("GET", "/api/sessions/abc/messages"), ("DELETE", "/api/sessions/abc"),
]
LEAKS = ("Traceback", "SELECT ", "INSERT INTO", "UPDATE isotope", "DELETE FROM", 'File "')


def with_password(url: str) -> tuple[str, str]:
    """The URL with a password (its own if it has one); the password."""
    params = conninfo_to_dict(url)
    if params.get("password"):
        return url, str(params["password"])
    password = "Pw-7c1e-secret-never-shown"  # the embedded test server trusts local connections
    return make_conninfo(url, password=password), password


@pytest.fixture(scope="module")
def secured(module_database_url: str, module_data_dir: Path) -> Iterator[tuple[ApiServer, str]]:
    url, password = with_password(module_database_url)
    server = ApiServer(url, module_data_dir, config={"api": {"max_request_bytes": LIMIT}},
                       ISOTOPE_API_TOKEN=TOKEN, ISOTOPE_LOG_LEVEL="INFO")
    yield server, password
    server.stop()


@pytest.mark.parametrize("method, path", PROTECTED)
def test_every_api_route_needs_the_token(secured: tuple[ApiServer, str], method: str, path: str) -> None:
    server, _ = secured
    with server.client() as anonymous, server.client(token="wrong-token") as wrong:
        for client in (anonymous, wrong):
            response = client.request(method, path, json={"content": "hi"} if method == "POST" else None)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
    basic = httpx.request(method, server.url + path, headers={"Authorization": f"Basic {TOKEN}"})
    assert_error(basic, 401, "unauthorized")


def test_the_token_opens_the_api_and_probes_need_none(secured: tuple[ApiServer, str]) -> None:
    server, _ = secured
    with server.client(token=TOKEN) as client:
        created = client.post("/api/sessions", json={"metadata": {"name": "secure"}})
        assert created.status_code == 201
        assert client.get("/api/sessions/postgres/statistics").status_code == 200
    for probe in ("/health", "/ready", "/metrics"):
        assert httpx.get(server.url + probe).status_code == 200


def test_request_size_limit(secured: tuple[ApiServer, str]) -> None:
    server, _ = secured
    with server.client(token=TOKEN) as client:
        session_id = client.post("/api/sessions", json={}).json()["session_id"]
        path = f"/api/sessions/{session_id}/messages"
        error = assert_error(client.post(path, json={"content": "x" * (LIMIT + 10)}), 413, "request_too_large")
        assert str(LIMIT) in error["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as the body arrives
            yield b'{"content": "'
            for _ in range(LIMIT // 512 + 2):
                yield b"y" * 512
            yield b'"}'

        chunked = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
        assert_error(chunked, 413, "request_too_large")
        fits = client.post(path, json={"content": "z" * (LIMIT - 100)})
        assert fits.status_code == 200, fits.text
        assert client.get(f"/api/sessions/{session_id}/messages").json()["message_count"] == 2


def test_no_secret_sql_or_traceback_anywhere(secured: tuple[ApiServer, str]) -> None:
    server, password = secured
    bodies: list[str] = []
    with server.client(token=TOKEN) as client:
        sid = client.post("/api/sessions", json={"metadata": {"name": "leak check"}}).json()["session_id"]
        requests = [("GET", "/api/sessions/postgres/connection/test", None),
                    ("GET", "/api/sessions/postgres/statistics", None),
                    ("POST", "/api/sessions/postgres/restore", None),
                    ("GET", "/api/sessions/restored", None), ("GET", f"/api/sessions/postgres/sessions/{sid}", None),
                    ("POST", f"/api/sessions/{sid}/messages", {"content": "add task: check leaks"}),
                    ("GET", "/api/sessions/postgres/sessions/" + "z" * 300, None),
                    ("POST", "/api/sessions", {"session_id": sid}), ("POST", "/api/sessions", {"metadata": [1]}),
                    ("GET", "/api/sessions/postgres/sessions?limit=-3", None), ("GET", "/ready", None),
                    ("GET", "/metrics", None), ("GET", "/openapi.json", None)]
        for method, path, body in requests:
            bodies.append(client.request(method, path, json=body).text)
    bodies.append(httpx.get(server.url + "/api/sessions/restored").text)  # a 401
    for text in [*bodies, server.log()]:
        assert password not in text and TOKEN not in text
        for leak in LEAKS:
            assert leak not in text, (leak, text[:500])


def test_down_database_reports_without_leaking(tmp_path: Path) -> None:
    """PostgreSQL unreachable (nothing listens on the port): the server starts on the fallback, says so,
    takes turns, and still shows no password anywhere."""
    password = "Pw-dead-2b7d-never-shown"
    dead = make_conninfo(host="127.0.0.1", port=str(free_port()), user="isotope", dbname="isotope",
                         password=password, connect_timeout="2")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ApiServer(dead, data_dir, config={"store": {"connect_timeout_s": 0.5}}, ISOTOPE_LOG_LEVEL="INFO")
    try:
        with server.client() as client:
            ready = client.get("/ready")
            assert ready.status_code == 200
            assert ready.json()["store"] == "fallback" and ready.json()["fallback_active"] is True
            test = client.get("/api/sessions/postgres/connection/test").json()
            assert test["ok"] is False and test["error"]
            sid = client.post("/api/sessions", json={"metadata": {"name": "offline"}}).json()["session_id"]
            turn = client.post(f"/api/sessions/{sid}/messages", json={"content": "hello"})
            assert turn.status_code == 200 and turn.json()["version"] == 2
            metrics = client.get("/metrics").text
            assert "isotope_fallback_active 1.0" in metrics
            texts = [json.dumps(test), ready.text, turn.text, metrics, server.log()]
    finally:
        server.stop()
    for text in texts:
        assert password not in text
        assert "Traceback" not in text
