"""``/health``, ``/ready``, ``/metrics`` (Prometheus text format), ``/openapi.json``."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.server import ApiServer


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        found[family.name] = [(dict(s.labels), s.value) for s in family.samples if s.name.endswith(
            ("_total", "_count")) or s.name == family.name]
    return found


def test_health(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_says_which_store(client: httpx.Client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "store": "postgres", "fallback_active": False, "spool_depth": 0}


def test_metrics_in_prometheus_format(client: httpx.Client) -> None:
    sid = client.post("/api/sessions", json={}).json()["session_id"]
    assert client.post(f"/api/sessions/{sid}/messages", json={"content": "hello"}).status_code == 200
    assert client.get("/health").status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = families(response.text)
    for name in ("isotope_turns", "isotope_turn_seconds", "isotope_save_seconds", "isotope_load_seconds",
                 "isotope_store_errors", "isotope_fallback_active", "isotope_sessions_active",
                 "isotope_spool_depth", "isotope_http_requests", "isotope_http_request_seconds",
                 "isotope_cleanup_runs", "isotope_api_turns_running"):
        assert name in found, name
    assert dict((labels["outcome"], value) for labels, value in found["isotope_turns"])["done"] >= 1
    assert found["isotope_turn_seconds"][0][1] >= 1  # the _count sample
    assert found["isotope_fallback_active"] == [({}, 0.0)]
    active = client.get("/api/sessions/postgres/statistics").json()["active_sessions"]
    assert found["isotope_sessions_active"] == [({}, float(active))]
    routes = {labels["route"] for labels, _ in found["isotope_http_requests"]}
    assert {"/api/sessions", "/api/sessions/{session_id}/messages", "/health"} <= routes


def test_openapi_documents_every_route(server: ApiServer) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/api/sessions/postgres/sessions", "/api/sessions/postgres/sessions/{session_id}",
            "/api/sessions/postgres/statistics", "/api/sessions/postgres/restore",
            "/api/sessions/postgres/cleanup", "/api/sessions/postgres/connection/test",
            "/api/sessions/restored", "/api/sessions/restore", "/api/sessions",
            "/api/sessions/{session_id}/messages", "/api/sessions/{session_id}",
            "/health", "/ready", "/metrics"} <= paths
    turn = schema["paths"]["/api/sessions/{session_id}/messages"]["post"]["responses"]["200"]["content"]
    assert set(turn) == {"application/json", "text/event-stream"}
