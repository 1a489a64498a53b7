"""Issue 13 item 6: the HTTP server's edges, against a real ``isotope serve`` process.

A public bind needs authentication; the Host header is checked (DNS rebinding); no cross-site
simple request changes anything; the expiry job's lock is outside the session id space.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from app.config import load_settings
from app.core.postgres_session_manager import SessionManager
from tests.api.server import ApiServer, assert_error, port_is_free
from tests.helpers import PYTHON, free_port, subprocess_env

TOKEN = "tok-edges-5d1c"
EVIL = "http://evil.example"


def row_count(database_url: str, session_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM isotope_sessions WHERE session_id = %s", (session_id,)).fetchone()
    return int(row[0]) if row else 0


def is_active(database_url: str, session_id: str) -> bool | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT is_active FROM isotope_sessions WHERE session_id = %s", (session_id,)).fetchone()
    return None if row is None else bool(row[0])


# ---------------------------------------------------------------------------------------------- binding


def test_a_public_bind_without_authentication_is_refused(module_database_url: str, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "config.yaml").write_text("{}\n")
    env = subprocess_env(module_database_url, tmp_path, ISOTOPE_CONFIG=str(tmp_path / "config.yaml"))
    env.pop("ISOTOPE_API_TOKEN", None)
    out = subprocess.run([PYTHON, "-m", "app.cli.main", "serve", "--host", "0.0.0.0", "--port", str(port)],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "0.0.0.0" in lines[0] and "api.token" in lines[0] and "--allow-unauthenticated" in lines[0]
    assert port_is_free(port)


def test_a_public_bind_serves_with_a_token_or_loudly_with_the_override(module_database_url: str,
                                                                       tmp_path: Path) -> None:
    public = {"api": {"host": "0.0.0.0", "cleanup_interval_s": 3600}}
    with_token = ApiServer(module_database_url, tmp_path, config=public, name="token", ISOTOPE_API_TOKEN=TOKEN)
    try:
        with with_token.client(token=TOKEN) as client:
            assert client.get("/api/sessions/postgres/statistics").status_code == 200
    finally:
        with_token.stop()
    assert "WITHOUT AUTHENTICATION" not in with_token.log()

    override = ApiServer(module_database_url, tmp_path, config=public, name="override",
                         args=("--allow-unauthenticated",))
    try:
        with override.client() as client:
            # a public bind without api.allowed_hosts answers to any name
            assert client.get("/api/sessions/postgres/statistics", headers={"Host": "isotope.lan"}).status_code == 200
    finally:
        override.stop()
    assert "SERVING WITHOUT AUTHENTICATION on 0.0.0.0" in override.log()


# ---------------------------------------------------------------------------------------------- Host


def test_only_loopback_names_are_served_on_a_loopback_bind(server: ApiServer) -> None:
    path = "/api/sessions/postgres/statistics"
    for host in ("localhost", f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        assert httpx.get(server.url + path, headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", f"evil.example:{server.port}", "localhost.evil.example", "127.0.0.1.nip.io"):
        error = assert_error(httpx.get(server.url + path, headers={"Host": host}), 400, "invalid_host")
        assert "api.allowed_hosts" in error["message"]
    rebound = httpx.post(server.url + "/api/sessions", json={}, headers={"Host": "evil.example"})
    assert_error(rebound, 400, "invalid_host")
    assert httpx.get(server.url + "/health", headers={"Host": "10.0.0.7:8000"}).status_code == 200  # probes


def test_allowed_hosts_replaces_the_default(module_database_url: str, tmp_path: Path) -> None:
    srv = ApiServer(module_database_url, tmp_path, name="hosts",
                    config={"api": {"allowed_hosts": ["isotope.internal", "*.corp.example"],
                                    "cleanup_interval_s": 3600}})
    try:
        path = srv.url + "/api/sessions/postgres/statistics"
        assert httpx.get(path, headers={"Host": "isotope.internal"}).status_code == 200
        assert httpx.get(path, headers={"Host": f"a.corp.example:{srv.port}"}).status_code == 200
        assert_error(httpx.get(path, headers={"Host": "localhost"}), 400, "invalid_host")
        assert_error(httpx.get(path, headers={"Host": "corp.example.evil"}), 400, "invalid_host")
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------- cross-site


@pytest.fixture
def expired_session(client: httpx.Client, module_database_url: str) -> Iterator[str]:
    created = client.post("/api/sessions", json={"metadata": {"name": "csrf victim"}, "expires_in_hours": 0})
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    yield session_id


CROSS_SITE = [
    ("form, foreign Origin", {"Content-Type": "application/x-www-form-urlencoded", "Origin": EVIL}, b"a=1"),
    ("form, no Origin", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1"),
    ("multipart form", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x--\r\n"),
    ("text/plain form", {"Content-Type": "text/plain"}, b'{"content": "x"}'),
    ("no body, foreign Origin", {"Origin": EVIL}, b""),
    ("null Origin (sandboxed page)", {"Origin": "null", "Content-Type": "application/json"}, b"{}"),
    ("JSON, foreign Origin", {"Origin": EVIL, "Content-Type": "application/json"}, b"{}"),
    ("fetch metadata: cross-site", {"Sec-Fetch-Site": "cross-site"}, b""),
    ("fetch metadata: same-site", {"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"}, b"{}"),
]


@pytest.mark.parametrize("headers, body", [c[1:] for c in CROSS_SITE], ids=[c[0] for c in CROSS_SITE])
def test_no_cross_site_simple_request_changes_state(server: ApiServer, module_database_url: str,
                                                    expired_session: str, headers: dict[str, str],
                                                    body: bytes) -> None:
    sid = expired_session
    attempts = [("POST", "/api/sessions/postgres/cleanup?hard_delete=true"), ("DELETE", f"/api/sessions/{sid}"),
                ("POST", f"/api/sessions/{sid}/messages"), ("POST", "/api/sessions"),
                ("POST", "/api/sessions/postgres/restore")]
    for method, path in attempts:
        response = httpx.request(method, server.url + path, headers=headers, content=body)
        assert response.status_code in (403, 415), (method, path, response.status_code, response.text)
        assert_error(response, response.status_code,
                     "cross_site_request" if response.status_code == 403 else "unsupported_media_type")
    assert row_count(module_database_url, sid) == 1, "a cross-site request deleted the session"


def test_same_origin_and_non_browser_clients_still_change_state(server: ApiServer, module_database_url: str,
                                                                expired_session: str) -> None:
    own = {"Origin": server.url, "Content-Type": "application/json"}
    created = httpx.post(server.url + "/api/sessions", headers=own, content=b"{}")
    assert created.status_code == 201
    deleted = httpx.delete(f"{server.url}/api/sessions/{created.json()['session_id']}", headers={"Origin": server.url})
    assert deleted.status_code == 200, deleted.text
    cleaned = httpx.post(server.url + "/api/sessions/postgres/cleanup?hard_delete=true")  # curl: no Origin, no body
    assert cleaned.status_code == 200, cleaned.text
    assert row_count(module_database_url, expired_session) == 0


# ---------------------------------------------------------------------------------------------- lock keys


def test_a_session_named_like_the_expiry_job_cannot_block_it(module_database_url: str, tmp_path: Path,
                                                             client: httpx.Client) -> None:
    """A client's session 'isotope:job:expiry' whose turn holds its lock used to make every expiry
    pass of every instance skip; the job's lock is now outside the session id space."""
    assert client.post("/api/sessions", json={"session_id": "isotope:job:expiry"}).status_code in (201, 409)
    doomed = client.post("/api/sessions", json={"expires_in_hours": 0}).json()["session_id"]
    (tmp_path / "cfg.yaml").write_text("{}\n")
    settings = load_settings(path=tmp_path / "cfg.yaml", environ={"ISOTOPE_DATABASE_URL": module_database_url,
                                                                  "ISOTOPE_DATA_DIR": str(tmp_path)})
    srv = None
    with SessionManager(settings, use_postgres=True) as holder, holder.lock("isotope:job:expiry"):
        # ... while that session's lock is held (a long turn), an instance runs its expiry passes
        srv = ApiServer(module_database_url, tmp_path, name="expiry", config={"api": {"cleanup_interval_s": 0.2}})
        try:
            deadline = time.monotonic() + 20
            while is_active(module_database_url, doomed) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert is_active(module_database_url, doomed) is False, "the expiry job never ran"
        finally:
            srv.stop()
