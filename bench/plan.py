"""How much work one run does. ``--quick`` shrinks every phase but skips none."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    histories: tuple[int, ...] = (10, 100, 1000)
    sessions_per_cell: int = 100  # one timed turn and one timed load per session
    listing_sessions: int = 10_000
    listing_messages: int = 10  # each listing session is created holding this many messages
    listing_touched: int = 100  # then this many get one more turn, so "most recent" is known
    listing_limit: int = 50
    listing_calls: int = 30
    throughput_clients: tuple[int, ...] = (1, 4, 8)
    throughput_history: int = 100
    throughput_sessions_per_client: int = 50  # played round-robin, so histories grow slowly
    throughput_seconds: float = 3.0
    roundtrip_calls: int = 200
    repeat: int = 2
    quick: bool = False


FULL = Plan()
QUICK = Plan(
    sessions_per_cell=20,
    listing_sessions=300,
    listing_touched=60,
    listing_calls=10,
    throughput_sessions_per_client=5,
    throughput_seconds=0.5,
    repeat=1,
    quick=True,
)


def make_plan(quick: bool, repeat: int | None) -> Plan:
    plan = QUICK if quick else FULL
    return plan if repeat is None else replace(plan, repeat=repeat)
