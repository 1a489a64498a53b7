"""``isotope sessions list|show|delete|cleanup|stats``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from app.cli.terminal import json_text, plain, shown
from app.config import load_settings
from app.core.postgres_session_manager import SessionManager
from app.core.present import info_json, jsonable, session_json
from app.errors import SessionNotFound

app = typer.Typer(help="Inspect and manage stored sessions.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextmanager
def _manager() -> Iterator[SessionManager]:
    with SessionManager(load_settings()) as manager:
        yield manager


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(help="How many.")] = 50,
    offset: Annotated[int, typer.Option(help="Skip this many.")] = 0,
    all_: Annotated[bool, typer.Option("--all", help="Include deleted and expired sessions.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Sessions, most recently updated first."""
    with _manager() as manager:
        rows = manager.list_sessions(limit=limit, offset=offset, include_inactive=all_)
    if as_json:
        typer.echo(json_text([info_json(r) for r in rows], indent=2))
        return
    table = Table()
    for column in ("session_id", "name", "messages", "version", "last_updated", "expires_at", "active"):
        table.add_column(column)
    for r in rows:
        table.add_row(shown(r["session_id"]), shown(r["metadata"].get("name", "")), str(r["message_count"]),
                      str(r["version"]), r["last_updated"].isoformat(timespec="seconds"),
                      r["expires_at"].isoformat(timespec="seconds") if r["expires_at"] else "",
                      "yes" if r["is_active"] else "no")
    _console().print(table)


@app.command()
def show(session_id: str, as_json: JsonFlag = False) -> None:
    """One session: metadata, tasks, files and messages."""
    with _manager() as manager:
        stored = manager.load(session_id)
    if stored is None:
        raise SessionNotFound(session_id)
    doc = session_json(stored)
    if as_json:
        typer.echo(json_text(doc, indent=2))
        return
    console = _console()
    console.print(f"[bold]{shown(session_id)}[/]  version {doc['version']}, {doc['message_count']} messages, "
                  f"updated {doc['last_updated']}", markup=True)
    console.print(f"metadata: {json_text(doc['metadata'])}", markup=False)
    for task in doc["tasks"] or []:
        console.print(f"task: {json_text(task)}", markup=False)
    for name in doc["files"] or {}:
        console.print(f"file: {plain(name)}", markup=False)
    for message in doc["messages"]:
        content = message.get("content") if isinstance(message, dict) else message
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        label = message.get("type", "?") if isinstance(message, dict) else "?"
        text = plain(content, lines=True) if isinstance(content, str) else json_text(jsonable(content))
        console.print(f"[{plain(label)}] {text}" + (f"  (tool calls: {json_text(calls)})" if calls else ""),
                      markup=False)


@app.command()
def delete(
    session_id: str,
    hard: Annotated[bool, typer.Option("--hard", help="Remove it instead of deactivating it.")] = False,
) -> None:
    """Soft-delete (default) or hard-delete a session."""
    with _manager() as manager:
        found = manager.delete_session(session_id, soft_delete=not hard)
    if not found:
        raise SessionNotFound(session_id)
    _console().print(f"{'removed' if hard else 'deactivated'} {shown(session_id)}")


@app.command()
def cleanup(
    hard: Annotated[bool, typer.Option("--hard", help="Remove expired sessions instead of deactivating.")] = False,
    inactive_hours: Annotated[float | None, typer.Option(
        help="With --hard, also remove sessions inactive for this many hours.")] = None,
) -> None:
    """Deactivate (or remove) expired sessions."""
    with _manager() as manager:
        count = manager.cleanup_expired_sessions(hard_delete=hard, inactive_for_hours=inactive_hours)
    _console().print(f"cleaned {count} expired sessions")


@app.command()
def stats(as_json: JsonFlag = False) -> None:
    """Session statistics."""
    with _manager() as manager:
        values = manager.get_session_statistics()
    if as_json:
        typer.echo(json_text(jsonable(values), indent=2))
        return
    table = Table()
    table.add_column("statistic")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(shown(key), shown(jsonable(value)))
    _console().print(table)
