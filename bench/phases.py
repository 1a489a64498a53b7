"""The measured phases of one system: per-history cells, listing, and the raw round trip.

A cell follows the anchor method: N sessions each seeded with H-2 messages, a CHECKPOINT, one
untimed warm-up turn per session (so every session holds exactly H messages and the pages the
turn touches are already dirty), then one timed turn per session between two probe positions,
then one timed full load per session, each checked against what was written.
"""

from __future__ import annotations

import gc
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


def measure_cell(system: System, probe: Probe, history: int, sessions: int) -> dict[str, Any]:
    ids = new_ids(sessions)
    for sid in ids:
        system.create(sid, corpus.messages(sid, 0, history - 2))
    probe.checkpoint()
    for sid in ids:
        play_turn(system, sid, history - 2)
    turns = [(sid, corpus.text(sid, history), corpus.text(sid, history + 1)) for sid in ids]
    gc.collect()
    start = probe.position()
    latencies = [timed_ms(system.turn, sid, human, ai)[0] for sid, human, ai in turns]
    end = probe.position()
    fpi = probe.fpi_bytes(start, end)
    return {
        "history": history,
        "sessions": sessions,
        "turn_ms": summary(latencies),
        "wal_bytes_per_turn": probe.wal_bytes(start, end) / sessions,
        "fpi_bytes_per_turn": None if fpi is None else fpi / sessions,
        "growth_bytes_per_turn": (end.relation_bytes - start.relation_bytes) / sessions,
        "xacts_per_turn": (end.next_xid - start.next_xid) / sessions,
        "checkpoint_in_window": None if start.redo_lsn is None else start.redo_lsn != end.redo_lsn,
        "autovacuum_at_edges": start.autovacuum_workers + end.autovacuum_workers > 0,
        "load_ms": summary(_timed_loads(system, turns, history + 2)),
    }


def _timed_loads(system: System, turns: list[tuple[str, str, str]], count: int) -> list[float]:
    gc.collect()
    latencies = []
    for sid, _, ai in turns:
        ms, loaded = timed_ms(system.load, sid)
        latencies.append(ms)
        system.verify(loaded, count, ai)
    return latencies


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
