"""From raw repetitions to per-metric values and ratios to the floor, and the goals of issue 7.

A ratio is always taken within one repetition (system / floor of that same repetition), so a
slow or fast moment of the machine moves both sides; the report shows the mean of those ratios.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.systems import FLOOR


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str  # "ms", "bytes", "count" or "x" (already a ratio)
    read: Callable[[dict[str, Any]], float | None]
    ratio: bool = True


CELL_METRICS = [
    Metric("turn_median_ms", "Per-turn persist latency, median ms", "ms", lambda c: c["turn_ms"]["median"]),
    Metric("turn_p95_ms", "Per-turn persist latency, p95 ms", "ms", lambda c: c["turn_ms"]["p95"]),
    Metric(
        "persist_median_ms",
        "Per-turn time inside the storage layer, median ms (LangGraph: the checkpointer's get_tuple, put and "
        "put_writes, summed, some of it in LangGraph's background threads; every other system: the whole turn)",
        "ms",
        lambda c: (c.get("persist_ms") or c["turn_ms"])["median"],
    ),
    Metric(
        "paired_ratio",
        "Per-turn persist latency paired with a reference floor (alternating turn by turn, so both are "
        "timed at the same moment): median(system) / median(floor)",
        "x",
        lambda c: (c.get("paired") or {}).get("ratio"),
        ratio=False,
    ),
    Metric(
        "wal_bytes_per_turn",
        "WAL bytes per turn (pg_current_wal_lsn diff / turns)",
        "bytes",
        lambda c: c["wal_bytes_per_turn"],
    ),
    Metric(
        "fpi_bytes_per_turn",
        "of which full-page images per turn",
        "bytes",
        lambda c: c["fpi_bytes_per_turn"],
        ratio=False,
    ),
    Metric(
        "growth_bytes_per_turn",
        "Table+index+TOAST growth per turn (sum of pg_total_relation_size)",
        "bytes",
        lambda c: c["growth_bytes_per_turn"],
    ),
    Metric(
        "xacts_per_turn",
        "Write transactions (xids assigned = WAL flushes at commit) per turn",
        "count",
        lambda c: c["xacts_per_turn"],
        ratio=False,
    ),
    Metric("load_median_ms", "Load full session, median ms", "ms", lambda c: c["load_ms"]["median"]),
]


def cell_values(reps: list[dict[str, Any]], system: str, history: int, metric: Metric) -> list[float | None]:
    """The metric for one system and history, one entry per repetition (None where missing)."""
    values: list[float | None] = []
    for rep in reps:
        cell = rep["systems"].get(system, {}).get("cells", {}).get(str(history))
        values.append(None if cell is None else metric.read(cell))
    return values


def throughput_values(reps: list[dict[str, Any]], system: str, clients: int) -> list[float | None]:
    values: list[float | None] = []
    for rep in reps:
        levels = rep["systems"].get(system, {}).get("throughput") or {}
        level = levels.get(str(clients))
        values.append(None if level is None else level["turns_per_s"])
    return values


def ratios(values: list[float | None], floor: list[float | None]) -> list[float | None]:
    return [None if v is None or f is None or f <= 0 else v / f for v, f in zip(values, floor, strict=True)]


def mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def build_summary(
    reps: list[dict[str, Any]], systems: list[str], histories: tuple[int, ...], clients: tuple[int, ...]
) -> dict[str, Any]:
    """{metric: {system: {column: {"values": [...], "ratios": [...]}}}} for every table."""
    out: dict[str, Any] = {}
    for metric in CELL_METRICS:
        out[metric.key] = {
            system: {
                str(h): _entry(cell_values(reps, system, h, metric), cell_values(reps, FLOOR, h, metric), metric.ratio)
                for h in histories
            }
            for system in systems
        }
    out["throughput_turns_per_s"] = {
        system: {
            str(c): _entry(throughput_values(reps, system, c), throughput_values(reps, FLOOR, c), True) for c in clients
        }
        for system in systems
    }
    return out


def _entry(values: list[float | None], floor: list[float | None], with_ratio: bool) -> dict[str, Any]:
    return {"values": values, "ratios": ratios(values, floor) if with_ratio else None}
