"""Markdown for the concurrency scenario: one row per cell and system, then the goals of issue 12."""

from __future__ import annotations

from typing import Any

# Issue 12's goals, checked on Isotope's row of the cell they name (n/a when that cell did not run).
GOALS: tuple[tuple[int, float, str, str], ...] = (
    (64, 1.0, "turns/s ratio to the ideal N / latency", ">= 0.90"),
    (512, 8.0, "requests in flight at the model", "all 512"),
    (512, 8.0, "turns/s ratio to the ideal N / latency", ">= 0.85"),
    (512, 8.0, "p50 turn time / latency", "<= 1.15"),
    (512, 8.0, "peak PostgreSQL connections", "<= store.pool_max_size"),
)


def render_section(conc: dict[str, Any]) -> list[str]:
    mode = "streamed (SSE) turns, the model called with stream=true" if conc["stream"] else "JSON turns"
    lines = [
        "### Concurrency at model latency (issue 12)\n",
        f"One server process; a fake OpenAI-compatible model answering each request after a fixed latency; "
        f"N clients, each on a session of its own, sending {conc['turns_per_client']} turn(s) back to back after "
        f"one untimed warm-up turn ({mode}). Ideal = N / latency turns/s. \"Before the model\": request sent "
        "to the model request's arrival; \"after\": the model's last byte to the reply's end (`done`). "
        f"Both servers have a pool of at "
        f"most {conc['pool_max_size']} PostgreSQL connections. \"stored\": every session holds exactly two "
        "messages per turn that succeeded.\n",
    ]
    headers = ["cell", "system", "turns/s (ideal)", "ratio", "p50 / latency", "p95 / latency",
               "ms before / after the model, p50 (p95)", "peak at model", "peak PG conns", "failed turns", "stored",
               "CPU ms/turn: server / clients / model"]
    rows = []
    for cell in conc["cells"]:
        name = f"N={cell['clients']}, {cell['latency_s']:g} s"
        for system in conc["systems"]:
            res = cell["systems"].get(system)
            if res is None:
                continue
            rows.append([name, conc["labels"][system], *_cells(res, cell["clients"])])
    lines += _table(headers, rows)
    lines += ["#### Goals of issue 12 (Isotope)\n"]
    lines += _table(["cell", "goal", "target", "measured", "status"], [_goal(conc, *g) for g in GOALS])
    notes = _notes(conc)
    if notes:
        lines += ["Notes:\n"] + [f"- {n}" for n in notes] + [""]
    return lines


def _cells(res: dict[str, Any], clients: int) -> list[str]:
    if "error" in res:
        return ["FAILED: " + res["error"].replace("|", "/")[:200]] + [""] * 9
    failed = str(res["turns_failed"])
    if res["failures"]:
        failed += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(res["failures"].items())) + ")"
    stored = "✓" if res["stored"]["mismatched"] == 0 else f"✗ {res['stored']['mismatched']} sessions"
    cpu = res.get("cpu_ms_per_turn") or {}
    return [
        f"{res['turns_per_s']:.1f} ({res['ideal_turns_per_s']:.1f})",
        f"{res['ratio']:.2f}",
        _x(res.get("p50_ratio")),
        _x(res.get("p95_ratio")),
        _phases(res.get("phases_ms") or {}),
        f"{res['model']['peak']} / {clients}",
        str(res["pg"]["peak"]),
        failed,
        stored,
        " / ".join("-" if cpu.get(k) is None else f"{cpu[k]:.1f}" for k in ("server", "clients", "model")),
    ]


def _phases(phases: dict[str, Any]) -> str:
    before, after = phases.get("before"), phases.get("after")
    if before is None or after is None:
        return "-"
    return f"{before['p50']:.0f} ({before['p95']:.0f}) / {after['p50']:.0f} ({after['p95']:.0f})"


def _x(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}"


def goal_values(conc: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals as data (for the JSON): cell, goal, target, measured, status."""
    out = []
    for clients, latency, goal, target in GOALS:
        cell, _goal_text, shown_target, measured, status = _goal(conc, clients, latency, goal, target)
        out.append({"cell": cell, "goal": goal, "target": shown_target, "measured": measured, "status": status})
    return out


def _goal(conc: dict[str, Any], clients: int, latency: float, goal: str, target: str) -> list[str]:
    name = f"N={clients}, {latency:g} s"
    res = next((c["systems"].get("isotope") for c in conc["cells"]
                if c["clients"] == clients and c["latency_s"] == latency), None)
    if res is None or "error" in res:
        return [name, goal, target, "-", "n/a"]
    if goal.startswith("requests in flight"):
        value, met = f"{res['model']['peak']}", res["model"]["peak"] >= clients
    elif goal.startswith("turns/s"):
        limit = float(target.split()[-1])
        value, met = f"{res['ratio']:.2f}", res["ratio"] >= limit
    elif goal.startswith("p50"):
        p50 = res.get("p50_ratio")
        value, met = _x(p50), p50 is not None and p50 <= float(target.split()[-1])
    else:
        value, met = f"{res['pg']['peak']}", res["pg"]["peak"] <= conc["pool_max_size"]
        target = f"<= {conc['pool_max_size']} (store.pool_max_size)"
    return [name, goal, target, value, "met" if met else "missed"]


def _notes(conc: dict[str, Any]) -> list[str]:
    notes = []
    for cell in conc["cells"]:
        for system, res in cell["systems"].items():
            where = f"N={cell['clients']}, {cell['latency_s']:g} s, {system}"
            if "error" in res:
                notes.append(f"{where}: FAILED: {res['error']}")
                continue
            if res.get("warmup_failed"):
                notes.append(f"{where}: {res['warmup_failed']} warm-up turns failed")
            if res["stored"]["mismatched"]:
                notes.append(f"{where}: stored message counts differ from the turns acknowledged: "
                             f"{res['stored']['examples']}")
            if res["pg"].get("error"):
                notes.append(f"{where}: pg_stat_activity poller failed: {res['pg']['error']}")
            notes.append(f"{where}: load average {res['loadavg']:.1f} at the end")
    return notes


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def render_standalone(meta: dict[str, Any], conc: dict[str, Any]) -> str:
    """The Markdown of a ``--concurrency`` run on its own."""
    head = [
        "# Isotope benchmark results: concurrency only\n",
        f"- started {meta['started']}, wall {meta['wall_seconds']:.0f} s, load average at the end "
        f"{', '.join(f'{v:.1f}' for v in meta['loadavg_at_end'])}",
        f"- PostgreSQL {meta['server'].get('version')} ({meta['server_kind']}), max_connections "
        f"{meta['server'].get('max_connections')}",
        f"- machine: {meta['machine']}; Python {meta['python']}",
        "",
    ]
    return "\n".join(head + render_section(conc))
