"""Export, import, fork, and the move from the former file store.

* :func:`export_sessions` writes the chosen sessions as JSON Lines (:mod:`app.core.records` has
  the format) from one consistent snapshot, streaming: memory does not grow with the number or
  the size of the sessions.
* :func:`import_sessions` reads such a file. Each line is checked completely (JSON, envelope,
  every encoded value, the store's limits) before anything is written; a bad line is reported by
  number and reason and nothing of it is written. Each session is written whole or not at all (a
  savepoint), many sessions per commit.
* :func:`import_files` moves the sessions of a file store (``postgres_sessions: false``) into
  PostgreSQL through the same path; sessions already there are left alone, so running it again
  imports nothing twice. The files are not touched.
* :func:`fork_session` (``manager.fork_session``) copies a session, or its first N messages, to
  a new one, server-side in one statement.

Export and import always work on PostgreSQL (the configured database), whatever
``postgres_sessions`` says.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from app.core.records import BadRecord, parse_line, rows_from_record
from app.errors import (
    InvalidInput,
    IsotopeError,
    LimitExceeded,
    SessionNotFound,
    StoreUnavailable,
)
from app.store import codec
from app.store import transfer as store_transfer
from app.store.base import check_metadata, check_session_id
from app.store.delta import Limits
from app.store.postgres import PostgresStore
from app.store.transfer import Selection, SessionRows

if TYPE_CHECKING:
    from app.core.postgres_session_manager import SessionManager

log = logging.getLogger("isotope.transfer")

ON_CONFLICT = ("skip", "replace", "new-id")
# An import commits after this many sessions or this many bytes of input, whichever comes first:
# one WAL flush for many sessions, and a bounded amount of work lost to a crash.
COMMIT_SESSIONS = 200
COMMIT_BYTES = 16 << 20

Progress = Callable[[int], None]


def _none(_: int) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Export


@dataclass
class ExportReport:
    exported: int = 0
    characters: int = 0
    missing: list[str] = field(default_factory=list)  # asked for by id, not in the database
    filtered: list[str] = field(default_factory=list)  # asked for by id: deleted, expired or another user's
    seconds: float = 0.0


def export_sessions(manager: SessionManager, out: IO[str], selection: Selection,
                    on_total: Progress = _none, on_progress: Progress = _none) -> ExportReport:
    """Write the selected sessions to ``out``, one JSON line each, in session id order."""
    started = time.perf_counter()
    report = ExportReport()
    store = _store(manager)
    with store_transfer.connect(store, "export") as conn:
        on_total(store_transfer.count_selected(conn, selection))
        exported: set[str] = set()
        for sid, pieces in store_transfer.export_lines(conn, selection):
            for piece in pieces:
                out.write(piece)
                report.characters += len(piece)
            report.exported += 1
            if selection.ids:
                exported.add(sid)
            on_progress(1)
        if selection.ids:
            _unexported(conn, selection, exported, report)
    report.seconds = time.perf_counter() - started
    return report


def _unexported(conn: Any, selection: Selection, exported: set[str], report: ExportReport) -> None:
    """Which of the ids asked for were not exported, and why."""
    assert selection.ids is not None
    wanted = [sid for sid in dict.fromkeys(selection.ids) if sid not in exported]
    existing = store_transfer.existing_ids(conn, wanted) if wanted else set()
    for sid in wanted:
        (report.filtered if sid in existing else report.missing).append(sid)


def export_one(manager: SessionManager, session_id: str, include_inactive: bool = False) -> Iterator[str]:
    """One session's line, in pieces. Raises SessionNotFound before the first piece if absent."""
    check_session_id(session_id)
    store = _store(manager)
    conn_cm = store_transfer.connect(store, "export")
    conn = conn_cm.__enter__()
    try:
        lines = store_transfer.export_lines(conn, Selection([session_id], include_inactive))
        found = next(lines, None)
        if found is None:
            raise SessionNotFound(session_id)
    except BaseException:
        conn_cm.__exit__(None, None, None)
        raise
    return _drain_then_close(found[1], lines, conn_cm)


def _drain_then_close(pieces: Iterator[str], lines: Iterator[Any], conn_cm: Any) -> Iterator[str]:
    try:
        yield from pieces
        for _ in lines:  # finish the cursor's transaction cleanly
            pass
    finally:
        conn_cm.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------
# Import


@dataclass
class ImportReport:
    imported: int = 0  # written (replaced ones included)
    replaced: int = 0
    skipped: int = 0
    failed: int = 0
    skipped_ids: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (id in the file, id given)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    aborted: str | None = None  # why the import stopped before the end of its input
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.aborted is None


# What an import consumes: (where, rows or the reason they could not be read, bytes of input).
Record = tuple[str, "SessionRows | BadRecord", int]


def read_lines(stream: IO[bytes], limits: Limits) -> Iterator[Record]:
    """Records of a JSON Lines stream. A line longer than the store could hold is reported
    without being read into memory."""
    max_line = 2 * limits.max_session_bytes + (1 << 20)
    number = 0
    while line := stream.readline(max_line + 1):
        number += 1
        size = len(line)
        where = f"line {number}"
        if size > max_line and not line.endswith(b"\n"):
            while chunk := stream.readline(1 << 20):
                size += len(chunk)
                if chunk.endswith(b"\n"):
                    break
            yield where, BadRecord(f"is longer than {max_line} bytes (twice store.max_session_bytes)"), size
            continue
        if not line.strip():
            continue
        try:
            yield where, parse_line(line, limits), size
        except BadRecord as exc:
            yield where, exc, size


def import_sessions(manager: SessionManager, stream: IO[bytes], on_conflict: str = "skip",
                    on_progress: Progress = _none) -> ImportReport:
    """Import a JSON Lines export. ``on_conflict``: skip, replace or new-id (see
    :func:`app.store.transfer.write_session`). ``on_progress`` gets bytes read."""
    return _import(manager, read_lines(stream, limits_of(manager)), on_conflict, on_progress)


def import_files(manager: SessionManager, data_dir: Path, on_total: Progress = _none,
                 on_progress: Progress = _none) -> ImportReport:
    """Move the file store's sessions (``DATA_DIR/sessions/*.json``) into PostgreSQL.

    Every session is taken as stored (version, timestamps, expiry, deleted or not); one that
    PostgreSQL has already is skipped, so a second run imports nothing. Files stay in place.
    """
    root = Path(data_dir) / "sessions"
    if not root.is_dir():
        raise InvalidInput("data_dir", f"{root} does not exist: no file store there (is DATA_DIR right?)")
    paths = sorted(root.glob("*.json"))
    on_total(len(paths))
    limits = limits_of(manager)
    records = (_file_record(path, limits) for path in paths)
    return _import(manager, records, "skip", on_progress, per_record=True)


def _file_record(path: Path, limits: Limits) -> Record:
    where = f"{path.parent.name}/{path.name}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return where, BadRecord(f"cannot be read: {exc}"), 0
    size = len(text)
    try:
        doc = codec.loads(text)
        if not isinstance(doc, dict):
            raise BadRecord("is not a file-store session (not a JSON object)")
        record = {"format": store_transfer.FORMAT, "format_version": store_transfer.FORMAT_VERSION,
                  **{k: doc[k] for k in ("session_id", "version", "created_at", "last_updated", "expires_at",
                                         "is_active", "metadata", "data") if k in doc}}
        return where, rows_from_record(record, limits), size
    except codec.CodecError as exc:
        return where, BadRecord(f"cannot be decoded: {exc}"), size
    except BadRecord as exc:
        return where, exc, size


def _import(manager: SessionManager, records: Iterable[Record], on_conflict: str, on_progress: Progress,
            per_record: bool = False) -> ImportReport:
    if on_conflict not in ON_CONFLICT:
        raise InvalidInput("on_conflict", f"must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    started = time.perf_counter()
    report = ImportReport()
    store = _store(manager)
    items = iter(records)
    with store_transfer.connect(store, "import") as conn:
        finished = False
        while not finished:
            batch: list[tuple[str, str, str]] = []  # (outcome, id in the file, id written)
            try:
                with store_transfer.batch(conn):
                    finished = _fill(conn, items, batch, report, on_conflict, on_progress, per_record)
            except StoreUnavailable as exc:
                _lost(report, batch, exc)
                break
            _committed(report, batch)
    report.seconds = time.perf_counter() - started
    return report


def _fill(conn: Any, items: Iterator[Record], batch: list[tuple[str, str, str]], report: ImportReport,
          on_conflict: str, on_progress: Progress, per_record: bool) -> bool:
    """Write sessions into the open batch until it is full (False) or the input ends (True)."""
    batch_bytes = 0
    for where, item, size in items:
        on_progress(1 if per_record else size)
        if isinstance(item, BadRecord):
            _fail(report, where, str(item))
            continue
        try:
            outcome, sid = store_transfer.write_session(conn, item, on_conflict, _new_id)
        except StoreUnavailable:
            raise
        except IsotopeError as exc:  # that session's savepoint is rolled back; the batch goes on
            _fail(report, f"{where} (session {item.session_id!r})", str(exc))
            continue
        batch.append((outcome, item.session_id, sid))
        batch_bytes += size
        if len(batch) >= COMMIT_SESSIONS or batch_bytes >= COMMIT_BYTES:
            return False
    return True


def _committed(report: ImportReport, batch: list[tuple[str, str, str]]) -> None:
    for outcome, original, sid in batch:
        if outcome == "skipped":
            report.skipped += 1
            report.skipped_ids.append(original)
            continue
        report.imported += 1
        report.replaced += outcome == "replaced"
        if sid != original:
            report.renamed.append((original, sid))


def _lost(report: ImportReport, batch: list[tuple[str, str, str]], exc: StoreUnavailable) -> None:
    """PostgreSQL went away: the batch's sessions were rolled back with it; stop there."""
    for _, original, _sid in batch:
        _fail(report, f"session {original!r}", "not imported: the transaction was lost with the connection")
    batch.clear()
    report.aborted = f"{exc}; the sessions reported imported are committed, run the import again for the rest"


def _fail(report: ImportReport, where: str, why: str) -> None:
    report.failed += 1
    report.failures.append((where, why))
    log.info("import: %s: %s", where, why)


def _new_id() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------------------------------------
# Fork


def fork_session(manager: SessionManager, session_id: str, new_session_id: str | None = None,
                 at_message: int | None = None, metadata: dict[str, Any] | None = None) -> str:
    """Copy a session to a new one and return the new id.

    The copy has the source's state, expiry and metadata (``metadata`` replaces the latter), its
    messages (only the first ``at_message`` with that argument; tasks, files and other members
    are the source's current ones), version 1 and new timestamps. It is independent: later turns
    on either session do not touch the other. SessionNotFound for an unknown, deleted or expired
    source; SessionExists when ``new_session_id`` is taken; InvalidInput for bad arguments.
    """
    check_session_id(session_id)
    target = check_session_id(new_session_id, "new_session_id") if new_session_id is not None else _new_id()
    if at_message is not None and (type(at_message) is not int or at_message < 0):
        raise InvalidInput("at_message", f"must be a whole number of messages, 0 or more, not {at_message!r}")
    check_metadata(metadata)
    if manager.session_info(session_id) is None:  # also replays the source's spooled writes first
        raise SessionNotFound(session_id)
    pg = manager.pg
    if pg is None or manager.fallback_active or (manager.spool is not None and manager.spool.has_pending(session_id)):
        return _fork_by_copy(manager, session_id, target, at_message, metadata)
    store_transfer.fork(pg, session_id, target, at_message, _metadata_text(metadata, manager))
    log.info("forked session %s -> %s (at_message=%s)", session_id, target, at_message)
    return target


def _metadata_text(metadata: dict[str, Any] | None, manager: SessionManager) -> str | None:
    if metadata is None:
        return None
    encoded = codec.encode(metadata, "metadata")
    if encoded.skipped:
        log.warning("fork: metadata values that cannot be stored were left out: %s", ", ".join(encoded.skipped))
    text = codec.dumps(encoded.value)
    limit = manager.settings.store.max_message_bytes
    if len(text.encode("utf-8")) > limit:
        raise LimitExceeded("metadata", f"is over {limit} bytes encoded (store.max_message_bytes)")
    return text


def _fork_by_copy(manager: SessionManager, session_id: str, target: str, at_message: int | None,
                  metadata: dict[str, Any] | None) -> str:
    """The fork through load and create: the file store, or PostgreSQL while it is unreachable."""
    stored = manager.load(session_id)
    if stored is None:
        raise SessionNotFound(session_id)
    data = dict(stored.data)
    if at_message is not None:
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise InvalidInput("at_message", f"session {session_id!r} has no message list to cut")
        if at_message > len(messages):
            raise InvalidInput("at_message", f"is {at_message}, past the {len(messages)} messages of "
                                             f"session {session_id!r}")
        data["messages"] = messages[:at_message]
    hours = None
    if stored.expires_at is not None:
        hours = max((stored.expires_at - datetime.now(UTC)).total_seconds() / 3600, 0.0)
    manager.create(target, data, metadata if metadata is not None else stored.metadata, hours)
    return target


# ---------------------------------------------------------------------------------------------


def limits_of(manager: SessionManager) -> Limits:
    cfg = manager.settings.store
    return Limits(cfg.max_message_bytes, cfg.max_session_bytes, cfg.inline_member_bytes)


def _store(manager: SessionManager) -> PostgresStore:
    if manager.pg is None:
        raise InvalidInput("postgres_sessions", "export and import work on PostgreSQL; open the manager with "
                                                "use_postgres=True")
    manager.open()
    return manager.pg
