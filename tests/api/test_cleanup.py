"""The expiry task in the server: two instances on one database run it together; one does each pass."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.server import ApiServer, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
EXPIRE_SOON_H = 1.5 / 3600  # 1.5 seconds


def counters(server: ApiServer, family: str, label: str) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            return {s.labels[label]: s.value for s in fam.samples if s.name.endswith("_total")}
    return {}


def active_ids(client: httpx.Client) -> set[str]:
    body = client.get("/api/sessions/postgres/sessions", params={"limit": 10_000}).json()
    return {s["session_id"] for s in body["sessions"]}


def test_two_instances_expire_sessions_once(database_url: str, data_dir: Path) -> None:
    config = {"api": {"cleanup_interval_s": 0.2}}
    servers = [ApiServer(database_url, data_dir, config=config, name=f"instance{i}", ISOTOPE_LOG_LEVEL="INFO")
               for i in range(2)]
    try:
        with servers[0].client() as a, servers[1].client() as b:
            doomed = {a.post("/api/sessions", json={"expires_in_hours": EXPIRE_SOON_H}).json()["session_id"]
                      for _ in range(12)}
            doomed |= {b.post("/api/sessions", json={"expires_in_hours": EXPIRE_SOON_H}).json()["session_id"]
                       for _ in range(12)}
            kept = a.post("/api/sessions", json={"expires_in_hours": 24}).json()["session_id"]
            assert doomed <= active_ids(a)
            wait_for(lambda: not (doomed & active_ids(b)), timeout=20)
            assert kept in active_ids(a)
            inactive = b.get("/api/sessions/postgres/sessions", params={"limit": 10_000, "include_inactive": True})
            assert doomed <= {s["session_id"] for s in inactive.json()["sessions"]}  # soft: still there

        # Expired sessions are listed as inactive at once; the expiry task then flags them.
        def deactivated() -> list[float]:
            return [counters(s, "isotope_cleanup_sessions", "action").get("deactivated", 0) for s in servers]

        def still_flagged_active() -> int:
            with psycopg.connect(database_url, autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM isotope_sessions WHERE session_id = ANY(%s) AND is_active",
                                   (list(doomed),)).fetchone()
            assert row is not None
            return int(row[0])

        wait_for(lambda: still_flagged_active() == 0, timeout=20)
        wait_for(lambda: sum(deactivated()) >= len(doomed), timeout=20)
        # Then let both run several more passes side by side: nothing may be counted twice.
        before = [counters(s, "isotope_cleanup_runs", "outcome").get("done", 0) for s in servers]
        wait_for(lambda: all(counters(s, "isotope_cleanup_runs", "outcome").get("done", 0) >= b + 3
                             for s, b in zip(servers, before, strict=True)), timeout=20)
        changed = deactivated()
        runs = [counters(s, "isotope_cleanup_runs", "outcome") for s in servers]
        with psycopg.connect(database_url, autocommit=True) as conn:
            kept_row = conn.execute("SELECT is_active FROM isotope_sessions WHERE session_id = %s", (kept,)).fetchone()
    finally:
        for server in servers:
            server.stop()
    assert sum(changed) == len(doomed), (changed, runs)  # each session deactivated exactly once
    assert kept_row == (True,)
    assert all(r.get("failed", 0) == 0 for r in runs), runs
    for server in servers:
        log = server.log()
        assert " ERROR " not in log and " WARNING " not in log and "Traceback" not in log, log


def test_hard_delete_after_hours(database_url: str, data_dir: Path) -> None:
    config = {"api": {"cleanup_interval_s": 0.2, "hard_delete_after_hours": 0}}
    server = ApiServer(database_url, data_dir, config=config)
    try:
        with server.client() as client:
            deleted = client.post("/api/sessions", json={}).json()["session_id"]
            expired = client.post("/api/sessions", json={"expires_in_hours": EXPIRE_SOON_H}).json()["session_id"]
            kept = client.post("/api/sessions", json={}).json()["session_id"]
            client.delete(f"/api/sessions/{deleted}")

            def everything() -> set[str]:
                body = client.get("/api/sessions/postgres/sessions", params={"limit": 10_000, "include_inactive": True})
                return {s["session_id"] for s in body.json()["sessions"]}

            wait_for(lambda: not ({deleted, expired} & everything()), timeout=20)
            assert kept in everything()
    finally:
        server.stop()
