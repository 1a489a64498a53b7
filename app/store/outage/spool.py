"""The outage spool: writes acknowledged while PostgreSQL was unreachable, kept on local disk.

Each record (:mod:`app.store.outage.record`) is one file
``<data_dir>/spool/<time_ns>-<session key>-<pid>-<n>.json``, written to a temporary name,
fsync'd, renamed and the directory fsync'd *before* the turn is acknowledged. File names sort in
acknowledgement order, and carry the session key so a session's backlog is found without opening
files. Replay (:mod:`app.store.outage.replay`) applies records in order and removes each file
only after PostgreSQL committed it.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.errors import StoreUnavailable
from app.store.files import fsync_dir, pid_alive, session_key
from app.store.outage.record import DeleteRecord, SaveRecord, SpoolRecord, UnreadableRecord
from app.store.private_files import private_dir, write_private

_counter = itertools.count()


class Spool:
    """A directory of pending records."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "spool"
        self.failed = self.root / "failed"
        self._last = 0
        self._stamp_lock = threading.Lock()
        self._empty_at: int | None = None  # the directory's mtime when last seen empty

    def open(self) -> None:
        private_dir(self.root)
        private_dir(self.failed)
        # A process killed while writing a record leaves its temporary file (never renamed, so
        # never acknowledged); remove those whose writer is gone.
        for entry in os.scandir(self.root):
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and not pid_alive(_writer(entry.name)):
                Path(entry.path).unlink(missing_ok=True)
        newest = self.pending()
        if newest:
            self._last = int(newest[-1].name.split("-")[0])

    def _stamp(self) -> int:
        # Names sort in acknowledgement order, and replay trusts that order; the wall clock may
        # step back (NTP), so a stamp is never below the last one this process (or, at open, a
        # process before it on this data dir) used.
        with self._stamp_lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last

    def append(self, record: SpoolRecord) -> Path:
        """Durably add a record; returns its path. Raises StoreUnavailable if the disk refuses."""
        name = f"{self._stamp():020d}-{session_key(record.session_id)}-{os.getpid()}-{next(_counter):06d}.json"
        path = self.root / name
        tmp = self.root / f".{name}.tmp"
        try:
            write_private(path, json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")), tmp)
            fsync_dir(self.root)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreUnavailable(
                f"PostgreSQL is unreachable and the outage spool at {self.root} refused the write: {exc}"
            ) from exc
        return path

    def pending(self, session_id: str | None = None) -> list[Path]:
        """Records not yet replayed, oldest first (optionally one session's)."""
        if not self.root.is_dir():
            return []
        key = session_key(session_id) if session_id is not None else None
        names = sorted(
            entry.name for entry in os.scandir(self.root)
            if entry.name.endswith(".json") and not entry.name.startswith(".")
            and (key is None or entry.name.split("-")[1] == key)
        )
        return [self.root / name for name in names]

    def has_pending(self, session_id: str) -> bool:
        return self.maybe_pending() and bool(self.pending(session_id))

    def maybe_pending(self) -> bool:
        """False when the spool is certainly empty, for the price of one stat (every save asks).

        Adding or removing a record changes the directory's mtime. A scan that found it empty is
        remembered with the mtime seen before the scan, but only if that mtime was already two
        seconds old: file timestamps are as coarse as the kernel's tick, and a record created
        within the tick of a recent mtime could leave it unchanged. Any change after an old mtime
        gets a new one, so an unchanged old mtime proves the directory still empty.
        """
        try:
            mtime = os.stat(self.root).st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._empty_at:
            return False
        old = time.time_ns() - mtime > 2_000_000_000
        pending = bool(self.pending())
        if not pending and old:
            self._empty_at = mtime
        return pending

    def depth(self) -> int:
        return len(self.pending())

    def read(self, path: Path) -> SaveRecord | DeleteRecord | None:
        """The record, or None if it is gone (replayed by another process meanwhile).

        Raises :class:`UnreadableRecord` for a file that is not a record (damaged on disk).
        """
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            raise UnreadableRecord(f"spooled record {path.name} cannot be read: {exc}") from exc
        return SpoolRecord.parse(record, path.name)

    def remove(self, path: Path) -> None:
        # No directory fsync: if a crash undoes the unlink, replay finds the write id in
        # isotope_spool_applied and skips the record. Saves a disk flush per replayed write.
        path.unlink(missing_ok=True)

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a record that cannot be replayed aside, with the reason next to it."""
        target = self.failed / path.name
        os.replace(path, target)
        write_private(target.with_suffix(".reason.txt"), reason + "\n")
        fsync_dir(self.root)
        return target

    @contextmanager
    def replay_lock(self) -> Iterator[bool]:
        """Yield True when this process may replay (one replayer per data dir at a time)."""
        private_dir(self.root)
        fd = os.open(self.root / ".replay.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


def _writer(tmp_name: str) -> int:
    """The pid in ``.<stamp>-<key>-<pid>-<n>.json.tmp`` (0 if the name is not one of ours)."""
    parts = tmp_name.split("-")
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else 0
