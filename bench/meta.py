"""Facts about the run that a reader needs to judge the numbers: versions, machine, method."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = [
    "isotope",
    "psycopg",
    "psycopg-pool",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-postgres",
    "langchain-core",
    "langchain-postgres",
    "openai-agents",
    "SQLAlchemy",
    "asyncpg",
]

METHOD = (
    "each cell seeds N sessions with H-2 distinct ~600-character messages (alternating human/AI), runs "
    "CHECKPOINT and one untimed warm-up turn per session (so each session holds exactly H messages and "
    "the WAL is steady state), then times one turn per session (persist 1 human + 1 AI message, "
    "client-observed, serialization included) between two probes: WAL = pg_current_wal_lsn delta, "
    "growth = delta of pg_total_relation_size summed over the system's own database, write "
    "transactions = delta of the next transaction id (PostgreSQL assigns xids only to transactions "
    "that write, so read-only ones are not counted). Every session is then loaded in full (timed) "
    "and checked message count and last message against what was written. Each system runs alone, "
    "in its own fresh database on the same server."
)


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine() -> str:
    cpu = _first_line_value(Path("/proc/cpuinfo"), "model name") or platform.processor() or "unknown CPU"
    mem = _first_line_value(Path("/proc/meminfo"), "MemTotal")
    mem_text = f", {int(mem.split()[0]) / 1024 / 1024:.0f} GB RAM" if mem else ""
    return f"{os.cpu_count()} x {cpu}{mem_text}, {platform.system()} {platform.release()}"


def _first_line_value(path: Path, key: str) -> str | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
