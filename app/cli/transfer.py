"""``isotope sessions export|import|fork`` and ``isotope import-files``.

Progress bars and summaries go to stderr, so ``isotope sessions export --all -o -`` writes
nothing but the JSON lines to stdout. Exit status 1 when anything failed (a bad line, an id not
found, a lost connection), 0 otherwise.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.config import load_settings
from app.core import transfer
from app.core.postgres_session_manager import SessionManager
from app.errors import InvalidInput
from app.store.transfer import Selection


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def _manager() -> Iterator[SessionManager]:
    # Always PostgreSQL: exports and imports are about the database, whatever postgres_sessions says.
    with SessionManager(load_settings(), use_postgres=True) as manager:
        yield manager


@contextmanager
def _progress(what: str, unit_bytes: bool = False) -> Iterator[Progress]:
    columns: list[Any] = [TextColumn(f"{what}"), BarColumn()]
    if unit_bytes:
        from rich.progress import DownloadColumn, TransferSpeedColumn

        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns += [MofNCompleteColumn()]
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=_err(), transient=True) as progress:
        yield progress


def export(
    session_ids: Annotated[list[str] | None, typer.Argument(help="Sessions to export (or --all / --user).",
                                                            show_default=False)] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="File to write; - for stdout.")] = "",
    all_: Annotated[bool, typer.Option("--all", help="Every active session.")] = False,
    include_inactive: Annotated[bool, typer.Option("--include-inactive",
                                                   help="Deleted and expired sessions too.")] = False,
    user: Annotated[str | None, typer.Option("--user", help="Only sessions whose metadata user_id is U.")] = None,
) -> None:
    """Write sessions as JSON Lines, one session per line (full state, metadata, timestamps, expiry, version)."""
    ids = list(dict.fromkeys(session_ids or []))
    if not output:
        raise InvalidInput("--output", "missing: name a file with -o FILE, or -o - for stdout")
    if ids and all_:
        raise InvalidInput("--all", "give session ids or --all, not both")
    if not ids and not all_ and user is None:
        raise InvalidInput("session_ids", "name the sessions to export: ids, --all, or --user U")
    selection = Selection(ids or None, include_inactive, user)
    err = _err()
    with _manager() as manager, _output(output) as out, _progress("exporting") as progress:
        task = progress.add_task("export", total=None)
        report = transfer.export_sessions(
            manager, out, selection, on_total=lambda n: progress.update(task, total=n),
            on_progress=lambda n: progress.advance(task, n))
    where = "stdout" if output == "-" else output
    err.print(f"exported {report.exported} sessions to {where} in {report.seconds:.2f} s", markup=False)
    for sid in report.missing:
        err.print(f"[red]not found:[/] {sid}")
    for sid in report.filtered:
        err.print(f"[yellow]not exported:[/] {sid} (deleted or expired: add --include-inactive; or not --user's)")
    if report.missing or report.filtered:
        raise typer.Exit(1)


@contextmanager
def _output(output: str) -> Iterator[IO[str]]:
    """stdout, or a file written under a temporary name and renamed once complete."""
    if output == "-":
        stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n", write_through=False)
        try:
            yield stream
        finally:
            stream.flush()
            stream.detach()
        return
    path = Path(output)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="\n") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    os.replace(partial, path)


def import_(
    file: Annotated[str, typer.Argument(help="A file written by `isotope sessions export`; - for stdin.")],
    on_conflict: Annotated[str, typer.Option(
        "--on-conflict", help="When a session id exists: skip (leave it), replace (overwrite it), "
                              "new-id (import under a new id).")] = "skip",
) -> None:
    """Import sessions from JSON Lines: each session whole or not at all; bad lines reported by number."""
    if on_conflict not in transfer.ON_CONFLICT:
        raise InvalidInput("--on-conflict", f"must be one of {', '.join(transfer.ON_CONFLICT)}, not {on_conflict!r}")
    with _input(file) as (stream, size), _manager() as manager, _progress("importing", True) as progress:
        task = progress.add_task("import", total=size)
        report = transfer.import_sessions(manager, stream, on_conflict,
                                          on_progress=lambda n: progress.advance(task, n))
    _summary(report, "--on-conflict replace or new-id to take them")


@contextmanager
def _input(file: str) -> Iterator[tuple[IO[bytes], int | None]]:
    if file == "-":
        yield sys.stdin.buffer, None
        return
    try:
        fh = open(file, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InvalidInput("FILE", f"cannot open {file}: {exc.strerror}") from None
    with fh:
        yield fh, os.fstat(fh.fileno()).st_size


def import_files(
    data_dir: Annotated[Path | None, typer.Argument(help="The file store's data dir (default: data_dir).",
                                                    show_default=False)] = None,
) -> None:
    """Move the former file store's sessions (postgres_sessions: false) into PostgreSQL; files stay in place."""
    settings = load_settings()
    source = data_dir if data_dir is not None else settings.data_dir
    with _manager() as manager, _progress("importing files") as progress:
        task = progress.add_task("files", total=None)
        report = transfer.import_files(manager, source, on_total=lambda n: progress.update(task, total=n),
                                       on_progress=lambda n: progress.advance(task, n))
    _summary(report, "already in PostgreSQL; the files are left as they are")


def _summary(report: transfer.ImportReport, skip_hint: str) -> None:
    out = Console(highlight=False, soft_wrap=True)
    replaced = f" ({report.replaced} replaced)" if report.replaced else ""
    out.print(f"imported {report.imported}{replaced}, skipped {report.skipped}, failed {report.failed} "
              f"in {report.seconds:.2f} s", markup=False)
    if report.skipped:
        shown = ", ".join(report.skipped_ids[:10]) + (" ..." if report.skipped > 10 else "")
        out.print(f"skipped (exist: {skip_hint}): {shown}", markup=False)
    for original, new in report.renamed:
        out.print(f"renamed: {original} -> {new}", markup=False)
    err = _err()
    for where, why in report.failures:
        err.print(f"[red]failed:[/] {where}: {why}", markup=True, highlight=False)
    if report.aborted:
        err.print(f"[red]stopped:[/] {report.aborted}")
    if not report.ok:
        raise typer.Exit(1)


def fork(
    session_id: Annotated[str, typer.Argument(help="The session to copy.")],
    new_id: Annotated[str | None, typer.Option("--new-id", help="Id of the copy (random by default).")] = None,
    at_message: Annotated[int | None, typer.Option("--at-message", help="Copy only the first N messages.")] = None,
    metadata: Annotated[str | None, typer.Option("--metadata", help="The copy's metadata, a JSON object "
                                                                    "(default: the source's).")] = None,
) -> None:
    """Copy a session to a new, independent one; print the new id."""
    meta = None
    if metadata is not None:
        try:
            meta = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise InvalidInput("--metadata", f"is not valid JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(meta, dict):
            raise InvalidInput("--metadata", "must be a JSON object")
    with SessionManager(load_settings()) as manager:
        new_session_id = manager.fork_session(session_id, new_id, at_message, meta)
    typer.echo(new_session_id)
