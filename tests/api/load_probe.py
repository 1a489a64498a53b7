"""Latency of the HTTP API under concurrent clients: GET one session, and a streamed turn.

Not a test (times never gate anything)::

    python -m tests.api.load_probe                    # 8 clients, own server on a private PostgreSQL
    python -m tests.api.load_probe --clients 16 --requests 400 --turns 60
    python -m tests.api.load_probe --url http://127.0.0.1:8000      # an already running server

Without ``--url`` it starts ``isotope serve`` (offline model) on ``ISOTOPE_DATABASE_URL`` or else
on an embedded PostgreSQL in a temporary directory. Each client owns one session (seeded with
``--history`` messages by real turns) so streamed turns do not queue behind each other's locks.
Phase 1: every client GETs its session ``--requests`` times. Phase 2: every client sends ``--turns``
messages with ``Accept: text/event-stream`` and reads the stream to its ``done`` event; a turn's
time is from sending the request to that event (first-event time is reported too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.server import ApiServer, sse_events

SSE = {"Accept": "text/event-stream"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_clients(clients: int, work: Callable[[int, httpx.Client], list[float]], url: str,
                headers: dict[str, str]) -> tuple[list[float], float]:
    """Run ``work`` in ``clients`` threads at once; all samples and the wall time."""
    samples: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def one(i: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            barrier.wait()
            samples[i] = work(i, client)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [s for per in samples for s in per], time.perf_counter() - started


def report(name: str, values: list[float], wall: float) -> None:
    ms = [v * 1000 for v in values]
    print(f"{name:<34} n={len(ms):>5}  p50={percentile(ms, 0.5):7.1f} ms  p95={percentile(ms, 0.95):7.1f} ms  "
          f"max={max(ms):7.1f} ms  mean={statistics.fmean(ms):6.1f} ms  {len(ms) / wall:6.1f}/s")


def probe(url: str, clients: int, requests: int, turns: int, history: int, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
        ids = [c.post("/api/sessions", json={"metadata": {"name": f"probe {i}"}}).json()["session_id"]
               for i in range(clients)]
        for sid in ids:
            for n in range(history // 2):
                c.post(f"/api/sessions/{sid}/messages", json={"content": f"seed message {n}"}).raise_for_status()

    def get_session(i: int, client: httpx.Client) -> list[float]:
        times = []
        for _ in range(requests):
            t0 = time.perf_counter()
            client.get(f"/api/sessions/postgres/sessions/{ids[i]}").raise_for_status()
            times.append(time.perf_counter() - t0)
        return times

    first_events: list[float] = []

    def streamed_turn(i: int, client: httpx.Client) -> list[float]:
        times = []
        for n in range(turns):
            t0 = time.perf_counter()
            with client.stream("POST", f"/api/sessions/{ids[i]}/messages", json={"content": f"turn {n}"},
                               headers=SSE) as response:
                response.raise_for_status()
                first = None
                for name, data in sse_events(response):
                    first = first or time.perf_counter() - t0
                    if name in ("done", "error"):
                        assert name == "done", data
                        break
            times.append(time.perf_counter() - t0)
            first_events.append(first or 0.0)
        return times

    print(f"{clients} concurrent clients against {url}; sessions start with {history} messages")
    values, wall = run_clients(clients, get_session, url, headers)
    report("GET one session", values, wall)
    values, wall = run_clients(clients, streamed_turn, url, headers)
    report("streamed turn (request -> done)", values, wall)
    report("streamed turn (request -> 1st event)", first_events, wall)
    metrics = httpx.get(url + "/metrics").text
    errors = sum(s.value for f in text_string_to_metric_families(metrics) if f.name == "isotope_store_errors"
                 for s in f.samples if s.name.endswith("_total"))
    print(f"store errors during the run: {errors:g} (any would mean a pool wait was taken for an outage)")


@contextmanager
def own_server() -> Iterator[str]:
    """A fresh database on ISOTOPE_DATABASE_URL's server, or a private embedded PostgreSQL; a server on it."""
    from app.store.embedded import EmbeddedPostgres
    from tests.conftest import PgServer

    base = Path(tempfile.mkdtemp(prefix="isotope-probe-"))
    base.chmod(0o711)  # as root the embedded server runs as another user, who must traverse to base/pg
    embedded = None
    admin = os.environ.get("ISOTOPE_DATABASE_URL")
    if admin is None:
        embedded = EmbeddedPostgres(base / "pg", cleanup="delete", database="isotope_admin")
        embedded.start()
        admin = embedded.admin_url()
    pg = PgServer(admin_url=admin, kind="probe")
    name = f"isotope_probe_{uuid.uuid4().hex[:8]}"
    url = pg.create_database(name)
    data_dir = base / "data"
    data_dir.mkdir()
    server = ApiServer(url, data_dir, config={"api": {"cleanup_interval_s": 3600}})
    try:
        yield server.url
    finally:
        server.stop()
        pg.drop_database(name)
        if embedded is not None:
            embedded.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--token", default=os.environ.get("ISOTOPE_API_TOKEN"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="GETs per client")
    parser.add_argument("--turns", type=int, default=30, help="streamed turns per client")
    parser.add_argument("--history", type=int, default=20, help="messages each session starts with")
    args = parser.parse_args(argv)
    if args.url:
        probe(args.url, args.clients, args.requests, args.turns, args.history, args.token)
        return 0
    with own_server() as url:
        probe(url, args.clients, args.requests, args.turns, args.history, args.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
