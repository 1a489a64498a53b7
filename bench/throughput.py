"""Throughput with 1, 4 and 8 concurrent clients, each a separate process with its own adapter.

Processes, not threads: each client is what one app worker would be (its own interpreter,
connection and session objects), so a library's Python cost is not serialised on one GIL while
PostgreSQL sits idle. Every level uses fresh sessions seeded with the same history; clients set
up and pick up their sessions untimed, meet at a barrier, then each plays turns round-robin
over its own sessions for a fixed time. Throughput = all turns / (last finish - first start).
Sessions grow while they are played; the report gives the longest history reached.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Executor
from typing import Any

from bench import corpus
from bench.phases import new_ids
from bench.plan import Plan
from bench.seeding import seed
from bench.systems import System, system_class

BARRIER_TIMEOUT_S = 300.0


def measure_throughput(
    system: System,
    conninfo: str,
    plan: Plan,
    executor: Executor,
    manager: Any,
) -> dict[str, Any]:
    levels: dict[str, Any] = {}
    for clients in plan.throughput_clients:
        groups = [new_ids(plan.throughput_sessions_per_client) for _ in range(clients)]
        seed(system, conninfo, [sid for group in groups for sid in group], plan.throughput_history, executor)
        barrier = manager.Barrier(clients, timeout=BARRIER_TIMEOUT_S)
        futures = [
            executor.submit(
                run_client,
                system.name,
                conninfo,
                group,
                plan.throughput_history,
                plan.throughput_seconds,
                barrier,
            )
            for group in groups
        ]
        outcomes = [f.result() for f in futures]
        levels[str(clients)] = _level(outcomes)
        _verify(system, outcomes[0]["positions"])
    return levels


def _level(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    start = min(o["start"] for o in outcomes)
    end = max(o["end"] for o in outcomes)
    turns = sum(o["turns"] for o in outcomes)
    return {
        "clients": len(outcomes),
        "turns": turns,
        "seconds": end - start,
        "turns_per_s": turns / (end - start),
        "per_client_turns": [o["turns"] for o in outcomes],
        "max_history": max(max(o["positions"].values()) for o in outcomes),
    }


def _verify(system: System, positions: dict[str, int]) -> None:
    """Every turn a client reported must be in its sessions (checked on the first client's)."""
    for sid, position in positions.items():
        system.verify(system.load(sid), position, corpus.text(sid, position - 1))


def run_client(
    system_name: str,
    conninfo: str,
    ids: list[str],
    history: int,
    seconds: float,
    barrier: Any,
) -> dict[str, Any]:
    """One client, in a worker process. Texts are made between turns (about 2 µs each)."""
    system = system_class(system_name)(conninfo)
    try:
        system.open(create_schema=False)
        for sid in ids:
            system.resume(sid, history)
    except BaseException:
        barrier.abort()  # release the other clients now rather than at the barrier's timeout
        with contextlib.suppress(Exception):
            system.close()
        raise
    try:
        return _play(system, ids, history, seconds, barrier)
    finally:
        system.close()


def _play(system: System, ids: list[str], history: int, seconds: float, barrier: Any) -> dict[str, Any]:
    positions = dict.fromkeys(ids, history)
    barrier.wait()
    # CLOCK_MONOTONIC is system-wide on Linux, so starts and ends compare across processes.
    start = time.monotonic()
    deadline = start + seconds
    turns = 0
    while time.monotonic() < deadline:
        sid = ids[turns % len(ids)]
        pos = positions[sid]
        system.turn(sid, corpus.text(sid, pos), corpus.text(sid, pos + 1))
        positions[sid] = pos + 2
        turns += 1
    return {"start": start, "end": time.monotonic(), "turns": turns, "positions": positions}
