"""The clients of one cell: N sessions, each its own client sending turns back to back over HTTP.

Each client has a connection of its own (``Fleet``: an ``httpx.AsyncClient`` per 16 clients). A cell:
prepare the sessions (untimed), one warm-up turn per session (untimed, all at once), then the
timed window: every client sends ``turns`` turns back to back, all starting together. Beside it a
thread polls ``pg_stat_activity`` for the server's database (from a connection to another
database, so the poller never counts itself) and the fake model's gauge is reset before and read
after the window. Afterwards every session's stored message count is checked against the turns
that succeeded: two messages per turn, each stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import psycopg

CONNECTIONS = """
SELECT count(*)::int, (count(*) FILTER (WHERE state = 'active'))::int
  FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()
"""
POLL_S = 0.05
T = TypeVar("T")
TAIL_BYTES = 64 * 1024
GROUP = 16  # sessions per HTTP client (connection pool)


@dataclass
class CellSpec:
    clients: int
    latency_s: float
    turns: int  # timed turns per client, after one warm-up turn
    stream: bool  # Accept: text/event-stream (the model is then called with stream=true)

    @property
    def label(self) -> str:
        return f"N={self.clients}, {self.latency_s:g} s"

    @property
    def turn_timeout_s(self) -> float:
        """How long one turn may take before its client gives up (a stalled server must not hang the bench)."""
        return 4 * self.latency_s + 120.0


@dataclass
class Outcome:
    ok: bool
    seconds: float
    kind: str  # "ok", "http 503 busy", "error event", "timeout", "transport: ..."
    key: str = ""  # the turn's tag in its text, which the fake model reports its timings under
    started: float = 0.0  # time.monotonic() when the request was sent (one clock for every process)


@dataclass
class ConnectionPoller:
    """Peak connections to ``dbname`` (all, and active), polled every POLL_S from a thread."""

    admin_url: str
    dbname: str
    peak: int = 0
    peak_active: int = 0
    polls: int = 0
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ConnectionPoller:
        self._thread = threading.Thread(target=self._run, name="pg-poller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                while not self._stop.is_set():
                    row = conn.execute(CONNECTIONS, (self.dbname,)).fetchone()
                    if row is not None:
                        self.peak = max(self.peak, row[0])
                        self.peak_active = max(self.peak_active, row[1])
                    self.polls += 1
                    self._stop.wait(POLL_S)
        except psycopg.Error as exc:
            self.error = f"{type(exc).__name__}: {exc}"


def turn_text(session_id: str, number: int) -> str:
    """The user message of a turn: its tag (``[session #n]``, see the fake model), then some text."""
    return f"[{session_id} #{number}] how is it going?"


async def send_turn(client: httpx.AsyncClient, session_id: str, number: int, spec: CellSpec) -> Outcome:
    """One turn through ``POST /api/sessions/{id}/messages``; timed from request to ``done``."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(spec.turn_timeout_s):
            outcome = await _turn(client, f"/api/sessions/{session_id}/messages", turn_text(session_id, number),
                                  spec.stream, started)
    except TimeoutError:
        outcome = Outcome(False, time.monotonic() - started, "timeout")
    outcome.key, outcome.started = f"{session_id} #{number}", started
    return outcome


async def _turn(client: httpx.AsyncClient, path: str, text: str, stream: bool, started: float) -> Outcome:
    try:
        if stream:
            headers = {"Accept": "text/event-stream"}
            async with client.stream("POST", path, json={"content": text}, headers=headers) as response:
                if response.status_code != 200:
                    return Outcome(False, time.monotonic() - started, _http_kind(response, await response.aread()))
                last = await _last_event(response)
            ok = last == "done"
            return Outcome(ok, time.monotonic() - started, "ok" if ok else f"{last or 'no'} event")
        response = await client.post(path, json={"content": text})
        if response.status_code != 200:
            return Outcome(False, time.monotonic() - started, _http_kind(response, response.content))
        return Outcome(True, time.monotonic() - started, "ok")
    except httpx.TimeoutException:
        return Outcome(False, time.monotonic() - started, "timeout")
    except httpx.TransportError as exc:
        return Outcome(False, time.monotonic() - started, f"transport: {type(exc).__name__}")


async def _last_event(response: httpx.Response) -> str | None:
    """The type of the stream's final event (``done`` or ``error``), reading it to the end.

    Only the tail is kept and parsed: splitting every frame into lines costs the load generator,
    which shares the machine with the server, more CPU than the server spends on a turn's events."""
    tail = b""
    async for chunk in response.aiter_bytes():
        tail = (tail + chunk)[-TAIL_BYTES:]
    at = tail.rfind(b"\nevent:")
    start = at + 1 if at >= 0 else 0 if tail.startswith(b"event:") else -1
    if start < 0:
        return None
    line = tail[start:].split(b"\n", 1)[0]
    return line[6:].strip().decode(errors="replace")


def _http_kind(response: httpx.Response, body: bytes) -> str:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = ""
    return f"http {response.status_code} {code}".strip()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run the clients on uvloop when it is installed (uvicorn's standard extra brings it): the load
    generator shares the machine's cores with the servers, and uvloop halves its own cost."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def gather_limited(calls: list[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


class Fleet:
    """The clients' HTTP connections: one ``httpx.AsyncClient`` per ``GROUP`` sessions.

    Not one pool for all: httpcore's pool scans its connections and waiting requests on every
    request and every response, so with 512 connections in one pool the load generator spent more
    CPU per turn than the server it measures."""

    def __init__(self, base_url: str, sessions: int, spec: CellSpec) -> None:
        limits = httpx.Limits(max_connections=GROUP + 2, max_keepalive_connections=GROUP + 2)
        timeout = httpx.Timeout(spec.turn_timeout_s, connect=60.0)
        self.clients = [httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)
                        for _ in range(-(-sessions // GROUP))]

    def client(self, index: int) -> httpx.AsyncClient:
        """The client of the ``index``-th session."""
        return self.clients[index // GROUP]

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))


async def play(fleet: Fleet, session_ids: list[str], spec: CellSpec, first: int) -> tuple[
        list[list[Outcome]], float]:
    """Every client plays ``spec.turns`` turns (numbered from ``first``); all start at once."""
    async def player(index: int, session_id: str) -> list[Outcome]:
        client = fleet.client(index)
        return [await send_turn(client, session_id, first + k, spec) for k in range(spec.turns)]

    started = time.monotonic()
    outcomes = await asyncio.gather(*(player(i, sid) for i, sid in enumerate(session_ids)))
    return list(outcomes), time.monotonic() - started


def summarise(spec: CellSpec, outcomes: list[list[Outcome]], wall: float,
              timings: dict[str, list[float]] | None = None) -> dict[str, Any]:
    flat = [o for per in outcomes for o in per]
    ok = [o.seconds for o in flat if o.ok]
    kinds: dict[str, int] = {}
    for o in flat:
        if not o.ok:
            kinds[o.kind] = kinds.get(o.kind, 0) + 1
    ideal = spec.clients / spec.latency_s
    rate = len(ok) / wall if wall > 0 else 0.0
    result: dict[str, Any] = {
        "turns_ok": len(ok), "turns_failed": len(flat) - len(ok), "failures": kinds, "wall_s": wall,
        "turns_per_s": rate, "ideal_turns_per_s": ideal, "ratio": rate / ideal,
        "samples_s": [o.seconds for o in flat],
    }
    result["phases_ms"] = _phases(flat, timings or {})
    if ok:
        p50 = statistics.median(ok)
        p95 = statistics.quantiles(ok, n=20, method="inclusive")[18] if len(ok) > 1 else ok[0]
        result.update({"p50_s": p50, "p95_s": p95, "max_s": max(ok),
                       "p50_ratio": p50 / spec.latency_s, "p95_ratio": p95 / spec.latency_s})
    return result


def _phases(flat: list[Outcome], timings: dict[str, list[float]]) -> dict[str, Any]:
    """Where a successful turn's time went, from the fake model's timings of its request (same clock):
    ``before`` = request sent -> model request arrived (HTTP, load, taking the session, the graph);
    ``after`` = model reply finished -> ``done`` received (the save, the events to the client)."""
    before, after, missing = [], [], 0
    for o in flat:
        if not o.ok:
            continue
        span = timings.get(o.key)
        if span is None:
            missing += 1
            continue
        before.append((span[0] - o.started) * 1000)
        after.append((o.started + o.seconds - span[1]) * 1000)
    return {"before": _p50_p95(before), "after": _p50_p95(after), "unmatched": missing}


def _p50_p95(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]
    return {"p50": statistics.median(values), "p95": p95}
