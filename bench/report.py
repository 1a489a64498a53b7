"""Markdown tables in the shape of the anchor results: one cell per system and column, every
repetition's value side by side ("a / b"), then the mean ratio to the floor of the same run."""

from __future__ import annotations

import os
from typing import Any

from bench.summary import CELL_METRICS
from bench.systems import FLOOR


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3f}" if value < 0.1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"
    if unit == "bytes":
        return _bytes(value)
    if unit == "x":
        return f"x{value:.2f}"
    if unit == "turns/s":
        return f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return f"{value:.2f}"


def _bytes(value: float) -> str:
    if abs(value) < 1024:
        return f"{value:.0f} B"
    if abs(value) < 1024 * 1024:
        return f"{value / 1024:.1f} kB" if abs(value) < 10 * 1024 else f"{value / 1024:.0f} kB"
    return f"{value / 1024 / 1024:.1f} MB"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f" (x{ratio:.2f})" if ratio < 10 else f" (x{ratio:.0f})"


def cell(entry: dict[str, Any], unit: str, system: str) -> str:
    values = " / ".join(fmt(v, unit) for v in entry["values"])
    if system == FLOOR or not entry.get("ratios"):
        return values
    present = [r for r in entry["ratios"] if r is not None]
    return values + fmt_ratio(sum(present) / len(present) if present else None)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def render(result: dict[str, Any]) -> str:
    meta, summary, reps = result["meta"], result["summary"], result["repetitions"]
    systems = [s for s in meta["systems"] if _available(reps, s)]
    lines = _header(meta, reps)
    histories = [str(h) for h in meta["plan"]["histories"]]
    for metric in CELL_METRICS:
        lines.append(f"### {metric.title}\n")
        rows = [
            [_label(reps, s)] + [cell(summary[metric.key][s][h], metric.unit, s) for h in histories] for s in systems
        ]
        lines += table(["system"] + [f"H={h}" for h in histories], rows)
    lines += _throughput(meta, summary, reps, systems)
    lines += _listing(reps, systems)
    lines += _roundtrip(reps)
    lines += _goals(result["goals"])
    lines += _problems(meta, reps)
    return "\n".join(lines)


def _available(reps: list[dict[str, Any]], system: str) -> bool:
    return any(rep["systems"].get(system, {}).get("available") for rep in reps)


def _label(reps: list[dict[str, Any]], system: str) -> str:
    for rep in reps:
        label = rep["systems"].get(system, {}).get("label")
        if label:
            return f"{system}: {label}"
    return system


def _header(meta: dict[str, Any], reps: list[dict[str, Any]]) -> list[str]:
    plan, server = meta["plan"], meta["server"]
    mode = "--quick (reduced sizes: not comparable with a full run)" if plan["quick"] else "full"
    return [
        "# Isotope benchmark results",
        "",
        f"Run {meta['started']} ({mode}), {meta['wall_seconds']:.0f} s wall time. "
        f"PostgreSQL {server['version']} ({meta['server_kind']}), fsync {server['fsync']}, "
        f"synchronous_commit {server['synchronous_commit']}, full_page_writes {server['full_page_writes']}, "
        f"shared_buffers {server['shared_buffers']}, {server['toast_compression']} TOAST compression, "
        f"autovacuum {server['autovacuum']}. {meta['machine']}. Python {meta['python']}. "
        f"Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}.",
        "",
        _load_line(reps),
        "",
        f"Method: {meta['method']}",
        "",
        f"Cells: repetition 1 / repetition 2 / ... ({len(reps)} repetition(s); even-numbered ones run the "
        "systems in reverse order). (xN) = mean over repetitions of the ratio to the floor measured "
        "in the same repetition. Sessions (= timed turns = timed loads) per cell: "
        f"{plan['sessions_per_cell']}. kB = 1024 B.",
        "",
    ]


def _load_line(reps: list[dict[str, Any]]) -> str:
    loads = [load for rep in reps for res in rep["systems"].values() for load in (res.get("loadavg") or {}).values()]
    if not loads:
        return ""
    return (
        f"1-minute load average when each phase started: {min(loads):.1f} to {max(loads):.1f} "
        f"(on a machine with {os.cpu_count()} CPUs; above that, other work competed with the run)."
    )


def _throughput(
    meta: dict[str, Any], summary: dict[str, Any], reps: list[dict[str, Any]], systems: list[str]
) -> list[str]:
    plan = meta["plan"]
    clients = [str(c) for c in plan["throughput_clients"]]
    lines = [
        f"### Throughput, turns/s (separate client processes, each playing {plan['throughput_seconds']:g} s "
        f"round-robin over {plan['throughput_sessions_per_client']} own sessions that start at "
        f"H={plan['throughput_history']}; (xN) = share of the floor's throughput)\n",
    ]
    rows = [
        [_label(reps, s)]
        + [cell(summary["throughput_turns_per_s"][s][c], "turns/s", s) for c in clients]
        + [str(_longest_history(reps, s))]
        for s in systems
    ]
    return lines + table(["system"] + [f"{c} client(s)" for c in clients] + ["longest history reached"], rows)


def _longest_history(reps: list[dict[str, Any]], system: str) -> int | str:
    reached = [
        level["max_history"]
        for rep in reps
        for level in (rep["systems"].get(system, {}).get("throughput") or {}).values()
    ]
    return max(reached) if reached else "-"


def _listing(reps: list[dict[str, Any]], systems: list[str]) -> list[str]:
    sessions = next(
        (
            r["systems"][s]["listing"]["sessions"]
            for r in reps
            for s in systems
            if (r["systems"].get(s) or {}).get("listing")
        ),
        "?",
    )
    lines = [
        f"### List the 50 most recently updated of {sessions} sessions, median ms "
        "(✓ = returned exactly the 50 sessions written last, in order)\n"
    ]
    rows = []
    for s in systems:
        listings = [r["systems"].get(s, {}).get("listing") for r in reps]
        rows.append(
            [
                _label(reps, s),
                _listing_cell([lst and lst.get("api") for lst in listings]),
                _listing_cell([lst and lst.get("sql") for lst in listings]),
                " / ".join(fmt(lst and lst["stored_bytes_per_message"], "bytes") for lst in listings),
                next((lst["note"] for lst in listings if lst), ""),
            ]
        )
    return lines + table(["system", "library API", "ad-hoc SQL", "stored bytes / message", "note"], rows)


def _listing_cell(timings: list[dict[str, Any] | None]) -> str:
    if all(t is None for t in timings):
        return "n/a"
    return " / ".join("-" if t is None else fmt(t["median"], "ms") + _mark(t) for t in timings)


def _mark(timing: dict[str, Any]) -> str:
    if timing["correct_order"]:
        return " ✓"
    return " (right set, other order)" if timing["correct_set"] else " ✗ WRONG SESSIONS"


def _roundtrip(reps: list[dict[str, Any]]) -> list[str]:
    median = " / ".join(fmt(r["roundtrip_ms"]["median"], "ms") for r in reps)
    p95 = " / ".join(fmt(r["roundtrip_ms"]["p95"], "ms") for r in reps)
    return ["### Raw round trip: psycopg `SELECT 1` (autocommit)\n"] + table(["median ms", "p95 ms"], [[median, p95]])


def _goals(goals: list[dict[str, Any]]) -> list[str]:
    rows = []
    for g in goals:
        suffix = "x" if g["unit"] == "x" else " ms"
        measured = " / ".join("-" if m is None else f"{m:.2f}{suffix}" for m in g["measured"])
        rows.append([g["goal"], g["target"], measured, g["status"]])
    return ["### Goals of issue 7 (met = met in every repetition)\n"] + table(
        ["goal", "target", "measured (per repetition)", "status"], rows
    )


def _problems(meta: dict[str, Any], reps: list[dict[str, Any]]) -> list[str]:
    notes = list(meta.get("notes", []))
    for rep in reps:
        for name, res in rep["systems"].items():
            if not res.get("available"):
                notes.append(f"repetition {rep['index']}: {name} not available: {res.get('reason')}")
            for phase, error in (res.get("errors") or {}).items():
                notes.append(f"repetition {rep['index']}: {name} {phase} FAILED: {error}")
    if not notes:
        return []
    return ["### Notes and problems\n"] + [f"- {n}" for n in notes] + [""]
