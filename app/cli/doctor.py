"""``isotope doctor`` and ``isotope migrate``."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any

import typer
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.config import Settings, load_settings, redact_conninfo
from app.core.postgres_session_manager import SessionManager
from app.core.present import jsonable
from app.errors import IsotopeError
from app.masking import mask_value, remember_settings, scrub
from app.store.schema import LATEST_VERSION


def doctor(
    roundtrip: Annotated[bool, typer.Option("--roundtrip/--no-roundtrip",
                                            help="Save, load and delete a probe session.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Check configuration, connection, schema and a save/load round trip. Exit 0 only when healthy."""
    console = Console(highlight=False)
    settings = load_settings()
    remember_settings(settings)
    report: dict[str, Any] = {"config": config_rows(settings)}
    started = time.perf_counter()
    with SessionManager(settings) as manager:
        report["open_seconds"] = round(time.perf_counter() - started, 3)
        report["connection"] = manager.test_connection()
        embedded = manager.pg.embedded if manager.pg is not None else None
        if embedded is not None and embedded.start_seconds is not None:
            report["embedded"] = {"pgdata": str(embedded.pgdata), "start_seconds": round(embedded.start_seconds, 3),
                                  "new_cluster": embedded.initialised}
        report["status"] = manager.status()
        try:
            report["statistics"] = manager.get_session_statistics()
        except IsotopeError as exc:
            report["statistics"] = {"error": str(exc)}
        if roundtrip:
            report["roundtrip"] = _roundtrip(manager)
    report["healthy"] = _healthy(report)
    report = _scrubbed(report)
    if as_json:
        console.print_json(json.dumps(jsonable(report)))
    else:
        _print(console, report)
    raise typer.Exit(0 if report["healthy"] else 1)


def migrate() -> None:
    """Apply any missing schema migrations to the configured PostgreSQL."""
    console = Console(highlight=False)
    settings = load_settings()
    with SessionManager(settings, use_postgres=True) as manager:
        assert manager.pg is not None
        applied = manager.pg.migrate()
    if applied:
        console.print(f"applied migrations {applied}; schema is at version {LATEST_VERSION}")
    else:
        console.print(f"schema already at version {LATEST_VERSION}; nothing to do")


def config_rows(settings: Settings) -> list[dict[str, str]]:
    """Every configuration value with its source; secret-like keys, options and URL passwords masked."""
    rows = []
    for key, value in _flatten(settings.model_dump()).items():
        if key == "database_url" and value is not None:
            shown = redact_conninfo(value)
        else:
            shown = mask_value(key.rsplit(".", 1)[-1] if key.startswith("postgresql.options.") else key, value)
        source = settings.sources.get(key) or settings.sources.get(key.rpartition(".")[0], "default")
        rows.append({"key": key, "value": "" if shown is None else str(shown), "source": source})
    return rows


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return out


def _scrubbed(value: Any) -> Any:
    """The report with every remembered secret and URL password masked in its text (error messages)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def _roundtrip(manager: SessionManager) -> dict[str, Any]:
    session_id = f"isotope-doctor-{uuid.uuid4().hex[:12]}"
    data = {"messages": [HumanMessage("doctor probe"), AIMessage("probe answered")], "tasks": [],
            "files": {"probe.txt": "ok"}, "metadata": {"probe": True}}
    started = time.perf_counter()
    try:
        result = manager.save(session_id, data, metadata={"name": "isotope doctor probe"})
        loaded = manager.load_session(session_id)
        manager.delete_session(session_id, soft_delete=False)
    except IsotopeError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": loaded == data, "backend": result.backend, "version": result.version,
            "ms": round((time.perf_counter() - started) * 1e3, 2)}


def _healthy(report: dict[str, Any]) -> bool:
    conn = report["connection"]
    schema_ok = conn.get("schema_version", LATEST_VERSION) == LATEST_VERSION
    roundtrip_ok = report.get("roundtrip", {"ok": True})["ok"]
    return bool(conn.get("ok")) and schema_ok and roundtrip_ok and not report["status"]["fallback_active"]


def _print(console: Console, report: dict[str, Any]) -> None:
    table = Table(title="Configuration", show_lines=False)
    for column in ("key", "value", "source"):
        table.add_column(column)
    for row in report["config"]:
        table.add_row(escape(row["key"]), escape(row["value"]), escape(row["source"]))
    console.print(table)
    conn = report["connection"]
    mark = "[green]ok[/]" if conn.get("ok") else "[red]FAILED[/]"
    console.print(f"Store: {conn.get('backend')}  connection {mark}  database={conn.get('database')} "
                  f"host={conn.get('host')} port={conn.get('port')}")
    if conn.get("ok") and conn.get("server_version"):
        console.print(f"  server {conn['server_version']}, latency {conn['latency_ms']} ms, schema version "
                      f"{conn.get('schema_version')}/{conn.get('schema_latest')}, synchronous_commit="
                      f"{conn.get('synchronous_commit')}, fsync={conn.get('fsync')}")
    if conn.get("error"):
        console.print(f"  [red]error:[/] {escape(conn['error'])}")
    if "embedded" in report:
        emb = report["embedded"]
        kind = "first start (initdb)" if emb["new_cluster"] else "warm start"
        console.print(f"  embedded PostgreSQL at {emb['pgdata']}: {kind} in {emb['start_seconds']} s")
    status = report["status"]
    console.print(f"  fallback active: {status['fallback_active']}, spool depth: {status['spool_depth']}")
    stats = report["statistics"]
    if "error" not in stats:
        console.print(f"Sessions: {stats['active_sessions']} active / {stats['total_sessions']} total, "
                      f"{stats['total_messages']} messages, {stats['storage_bytes']} bytes stored")
    if "roundtrip" in report:
        rt = report["roundtrip"]
        rt_mark = "[green]ok[/]" if rt["ok"] else "[red]FAILED[/]"
        console.print(f"Round trip (save, load, delete a probe session): {rt_mark}"
                      + (f" via {rt['backend']} in {rt['ms']} ms" if "ms" in rt else f" {escape(rt.get('error', ''))}"))
    verdict = "[green]healthy[/]" if report["healthy"] else "[red]NOT healthy[/]"
    console.print(f"Verdict: {verdict}")
