"""SIGTERM: stop accepting, let running turns finish (or abandon them whole), exit within 10 s, free the port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.postgres_session_manager import SessionManager
from tests.api.server import ApiServer, port_is_free, sse_events, wait_for
from tests.api.slow_model import SlowModel
from tests.helpers import make_settings

pytestmark = pytest.mark.slow
SSE = {"Accept": "text/event-stream"}


def _turns_running(server: ApiServer) -> float:
    with server.client() as c:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith("isotope_api_turns_running "):
                return float(line.split()[1])
    return 0.0


@pytest.fixture
def model() -> Iterator[SlowModel]:
    with SlowModel() as slow:
        yield slow


@pytest.fixture
def check(database_url: str, tmp_path: Path) -> Iterator[SessionManager]:
    """A manager in the test process, to see what the server stored."""
    (tmp_path / "check").mkdir()
    with SessionManager(make_settings(database_url, tmp_path / "check"), use_postgres=True) as manager:
        yield manager


@pytest.fixture
def start(database_url: str, data_dir: Path, model: SlowModel) -> Iterator[Any]:
    """``start(**api_config)`` runs a server on this test's database; any left running is killed."""
    started: list[ApiServer] = []

    def run(**api: Any) -> ApiServer:
        server = ApiServer(database_url, data_dir, config={"engine": model.engine_config(), "api": api},
                           name=f"server{len(started)}")
        started.append(server)
        return server

    yield run
    for server in started:
        server.kill()


def new_session(server: ApiServer) -> str:
    with server.client() as c:
        return str(c.post("/api/sessions", json={"metadata": {"name": "shutdown"}}).json()["session_id"])


def assert_clean_exit(server: ApiServer, seconds: float) -> None:
    assert server.proc.returncode == 0, server.log()
    assert seconds < 10.0, f"exit took {seconds:.1f} s"
    assert port_is_free(server.port)
    assert "Traceback" not in server.log()


def test_idle_server_exits_at_once(start: Any) -> None:
    server = start()
    seconds = server.terminate()
    assert_clean_exit(server, seconds)
    assert seconds < 3.0


def test_running_turns_finish_and_are_saved(start: Any, check: SessionManager) -> None:
    server = start()
    streamed, plain = new_session(server), new_session(server)
    results: dict[str, Any] = {}

    def json_turn() -> None:
        with server.client() as c:
            results["json"] = c.post(f"/api/sessions/{plain}/messages", json={"content": "slow 10 0.2"})

    with server.client() as c, c.stream("POST", f"/api/sessions/{streamed}/messages",
                                        json={"content": "slow 10 0.2"}, headers=SSE) as response:
        other = threading.Thread(target=json_turn)
        other.start()
        events = sse_events(response)
        first = next(events)
        assert first[0] == "token"
        # Signal only once the JSON turn is running too (the server's own gauge says so).
        wait_for(lambda: _turns_running(server) >= 2, timeout=30)
        signalled = time.monotonic()
        server.proc.send_signal(15)
        rest = list(events)
    other.join()
    server.wait_exit(15)
    assert_clean_exit(server, time.monotonic() - signalled)
    assert rest[-1][0] == "done" and rest[-1][1]["version"] == 2
    assert results["json"].status_code == 200 and results["json"].json()["version"] == 2
    for session_id in (streamed, plain):
        stored = check.load(session_id)
        assert stored is not None and stored.version == 2
        assert stored.data["messages"][-1].content.split() == [f"w{i}" for i in range(10)]


def test_turn_past_the_grace_is_abandoned_whole(start: Any, check: SessionManager) -> None:
    server = start()  # default grace: api.shutdown_grace_s
    session_id = new_session(server)
    with server.client() as c, c.stream("POST", f"/api/sessions/{session_id}/messages",
                                        json={"content": "slow 200 0.1"}, headers=SSE) as response:
        events = sse_events(response)
        assert next(events)[0] == "token"
        signalled = time.monotonic()
        server.proc.send_signal(15)
        rest = list(events)
    server.wait_exit(15)
    assert_clean_exit(server, time.monotonic() - signalled)
    name, error = rest[-1]
    assert name == "error" and error["code"] == "shutting_down" and "unchanged" in error["message"]
    assert all(n == "token" for n, _ in rest[:-1])
    stored = check.load(session_id)
    assert stored is not None and stored.version == 1 and stored.data["messages"] == []
    # The abandoned turn left no lock behind: a new server takes a turn on the session at once.
    again = start()
    with again.client() as c:
        reply = c.post(f"/api/sessions/{session_id}/messages", json={"content": "hello"})
    again.stop()
    assert reply.status_code == 200 and reply.json()["version"] == 2


def test_client_leaving_does_not_stop_the_turn(start: Any, check: SessionManager) -> None:
    server = start()
    session_id = new_session(server)
    with server.client() as c, c.stream("POST", f"/api/sessions/{session_id}/messages",
                                        json={"content": "slow 8 0.1"}, headers=SSE) as response:
        assert next(sse_events(response))[0] == "token"
    # The response is closed; the turn runs on and is saved.
    stored = wait_for(lambda: (s := check.load(session_id)) is not None and s.version == 2 and s, timeout=10)
    assert stored.data["messages"][-1].content.split() == [f"w{i}" for i in range(8)]
    with server.client() as c:
        metrics = c.get("/metrics").text
    assert 'isotope_turns_total{outcome="done"} 1.0' in metrics
    server.stop()


def test_new_turns_are_refused_while_stopping(start: Any) -> None:
    server = start(shutdown_grace_s=3)
    busy, idle = new_session(server), new_session(server)
    with server.client() as c, c.stream("POST", f"/api/sessions/{busy}/messages",
                                        json={"content": "slow 20 0.1"}, headers=SSE) as response:
        events = sse_events(response)
        assert next(events)[0] == "token"
        server.proc.send_signal(15)
        with server.client() as other:
            try:
                refused = other.post(f"/api/sessions/{idle}/messages", json={"content": "hi"})
            except httpx.TransportError:
                refused = None  # the listening socket is already closed: refused outright
        list(events)
    server.wait_exit(15)
    if refused is not None:
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
