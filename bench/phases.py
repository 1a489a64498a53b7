"""Listing and the raw round trip, plus the helpers every phase shares (cells: ``bench.cell``)."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import Executor
from typing import Any

from bench import corpus
from bench.plan import Plan
from bench.probes import Probe
from bench.seeding import seed
from bench.stats import summary, timed_ms
from bench.systems import System

ANALYZE = "ANALYZE"
SELECT_ONE = "SELECT 1"


def new_ids(count: int) -> list[str]:
    # UUIDs because langchain-postgres insists on them; every other system takes any text.
    return [str(uuid.uuid4()) for _ in range(count)]


def play_turn(system: System, session_id: str, position: int) -> None:
    """One (untimed) turn writing messages ``position`` and ``position + 1``."""
    system.turn(session_id, corpus.text(session_id, position), corpus.text(session_id, position + 1))


def measure_listing(system: System, probe: Probe, plan: Plan, conninfo: str, executor: Executor) -> dict[str, Any]:
    """Seed many small sessions, touch a known few last, then time "the 50 most recent"."""
    ids = new_ids(plan.listing_sessions)
    before = probe.position().relation_bytes  # the cells' and throughput's sessions are not counted
    seed(system, conninfo, ids, plan.listing_messages, executor)
    touched = random.Random(7).sample(ids, plan.listing_touched)
    for sid in touched:
        system.resume(sid, plan.listing_messages)
        play_turn(system, sid, plan.listing_messages)
    expected = touched[::-1][: plan.listing_limit]
    stored = probe.position().relation_bytes - before
    # Statistics must not depend on whether autovacuum's analyze happened to run yet.
    probe.execute(ANALYZE)
    result: dict[str, Any] = {
        "sessions": plan.listing_sessions,
        "stored_bytes_per_message": stored / (plan.listing_sessions * plan.listing_messages + 2 * len(touched)),
        "api": _time_listing(lambda: system.list_recent(plan.listing_limit), expected, plan.listing_calls),
        "sql": None,
        "note": system.listing_note,
    }
    if system.listing_sql is not None:
        query = system.listing_sql
        result["sql"] = _time_listing(
            lambda: [str(r[0]) for r in probe.sql_rows(query, (plan.listing_limit,))],
            expected,
            plan.listing_calls,
        )
    result["note"] = system.listing_note  # the API call may have refined it
    return result


def _time_listing(call: Any, expected: list[str], calls: int) -> dict[str, Any] | None:
    first = call()  # untimed: warms caches and lets an adapter size its fetch
    if first is None:
        return None
    latencies = [timed_ms(call)[0] for _ in range(calls)]
    result = summary(latencies)
    result["correct_order"] = first == expected
    result["correct_set"] = set(first) == set(expected)
    return result


def measure_roundtrip(probe: Probe, calls: int) -> dict[str, Any]:
    """psycopg ``SELECT 1``: the unit every per-turn figure can be read against."""
    probe.sql_rows(SELECT_ONE, ())
    return summary([timed_ms(probe.sql_rows, SELECT_ONE, ())[0] for _ in range(calls)])
