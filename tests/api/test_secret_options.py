"""A secret-like connection option (``sslpassword``) appears in no response and no log line of the server."""

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
