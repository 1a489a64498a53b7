"""No secret-like connection option in responses or logs; no client-chosen text can forge a log line."""

from __future__ import annotations

from pathlib import Path

from tests.api.server import ApiServer

SSL_PASSWORD = "sslpw-Ww52-never-shown"


def test_secret_options_stay_out_of_responses_and_logs(module_database_url: str, tmp_path: Path) -> None:
    url = f"{module_database_url} sslmode=prefer sslpassword={SSL_PASSWORD}"
    server = ApiServer(url, tmp_path, ISOTOPE_LOG_LEVEL="DEBUG")
    try:
        with server.client() as client:
            bodies = [client.get(path).text for path in (
                "/api/sessions/postgres/connection/test", "/api/sessions/postgres/statistics", "/ready")]
            created = client.post("/api/sessions", json={"metadata": {"name": "x"}})
            assert created.status_code == 201
    finally:
        server.stop()
    for text in (*bodies, server.log()):
        assert SSL_PASSWORD not in text


def test_a_client_chosen_session_id_cannot_forge_log_lines(module_database_url: str, tmp_path: Path) -> None:
    forged = "x\n2026-01-01 00:00:00 CRITICAL isotope: FORGED\x1b[2J\x9b"
    server = ApiServer(module_database_url, tmp_path, ISOTOPE_LOG_LEVEL="INFO")
    try:
        with server.client() as client:
            assert client.post("/api/sessions", json={"session_id": forged}).status_code == 201
    finally:
        server.stop()
    log = server.log()
    assert "FORGED" in log  # logged, but inside its own line
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())
    assert "\x1b" not in log and "\x9b" not in log
