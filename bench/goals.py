"""The goals of issue 7, each checked against every repetition: met only if met in all of them."""

from __future__ import annotations

from typing import Any

from bench.summary import CELL_METRICS, cell_values, ratios

ISOTOPE_SAVE = "isotope_save"
ISOTOPE_ENGINE = "isotope_engine"
LIST_TARGET_MS = 0.5


def _metric(key: str) -> Any:
    return next(m for m in CELL_METRICS if m.key == key)


def evaluate(reps: list[dict[str, Any]], histories: tuple[int, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    # Latency against the floor timed turn by turn beside it (bench.cell): on a shared machine the
    # floor's own cell, minutes away, can catch a different disk; the block ratios are in the tables.
    paired = _metric("paired_ratio")
    for h in histories:
        goal = f"per-turn persist (save_session, full state), median, paired with the floor, H={h}"
        rows.append(_row(goal, "<= 1.5x floor", cell_values(reps, ISOTOPE_SAVE, h, paired), 1.5, "x"))
    # Only save_session: the engine stores its offline model's short reply, not the 600-character
    # one every other system stores, so its WAL is not byte-for-byte comparable with the floor's.
    for h in histories:
        rows.append(_vs_floor(reps, ISOTOPE_SAVE, "wal_bytes_per_turn", h, 1.3, f"WAL per turn (save_session), H={h}"))
    top, bottom = max(histories), min(histories)
    rows.append(_vs_floor(reps, ISOTOPE_SAVE, "load_median_ms", top, 1.2, f"full load, median, H={top}"))
    rows.append(_listing(reps))
    rows.append(_engine_growth(reps, top, bottom))
    return rows


def _row(goal: str, target: str, measured: list[float | None], limit: float, unit: str) -> dict[str, Any]:
    present = [m for m in measured if m is not None]
    if not present or len(present) < len(measured):
        status = "n/a"
    else:
        status = "met" if all(m <= limit for m in present) else "missed"
    return {
        "goal": goal,
        "target": target,
        "limit": limit,
        "unit": unit,
        "measured": measured,
        "status": status,
    }


def _vs_floor(reps: list[dict[str, Any]], system: str, key: str, h: int, limit: float, goal: str) -> dict[str, Any]:
    metric = _metric(key)
    measured = ratios(cell_values(reps, system, h, metric), cell_values(reps, "floor", h, metric))
    return _row(goal, f"<= {limit}x floor", measured, limit, "x")


def _listing(reps: list[dict[str, Any]]) -> dict[str, Any]:
    measured: list[float | None] = []
    for rep in reps:
        listing = rep["systems"].get(ISOTOPE_SAVE, {}).get("listing") or {}
        api = listing.get("api")
        measured.append(api["median"] if api and api.get("correct_set") else None)
    sessions = next(
        (
            r["systems"][ISOTOPE_SAVE]["listing"]["sessions"]
            for r in reps
            if (r["systems"].get(ISOTOPE_SAVE) or {}).get("listing")
        ),
        None,
    )
    goal = f"list the 50 most recent of {sessions or '?'} sessions (list_sessions), median"
    return _row(goal, f"<= {LIST_TARGET_MS} ms", measured, LIST_TARGET_MS, "ms")


def _engine_growth(reps: list[dict[str, Any]], top: int, bottom: int) -> dict[str, Any]:
    metric = _metric("turn_median_ms")
    at_top = cell_values(reps, ISOTOPE_ENGINE, top, metric)
    at_bottom = cell_values(reps, ISOTOPE_ENGINE, bottom, metric)
    measured = ratios(at_top, at_bottom)
    return _row(f"engine turn at H={top} vs its own time at H={bottom}, median", "<= 2x", measured, 2.0, "x")
