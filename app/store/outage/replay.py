"""Replaying the outage spool into PostgreSQL: in order, exactly once, in batches.

A background thread (:meth:`Replayer.start`) wakes every ``store.spool_replay_interval_s``, or at
once when the store trips, and runs :meth:`Replayer.step`: if PostgreSQL was down, probe it and
recover; then drain the spool. Each batch is one transaction (:mod:`app.store.postgres.spool_merge`)
and takes its sessions' turn locks only if free; a busy session is skipped with its later writes
(order is kept) until the next pass. A record that cannot be replayed is quarantined in
``spool/failed`` with the reason beside it. One replayer per data dir at a time (a file lock).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app import metrics
from app.errors import IsotopeError, SessionBusy, StoreUnavailable
from app.store.outage.health import Health
from app.store.outage.record import DeleteRecord, SaveRecord, UnreadableRecord
from app.store.outage.spool import Spool
from app.store.outage.writer import SpoolWriter
from app.store.postgres import PostgresStore

log = logging.getLogger("isotope.manager")

# Spooled writes applied per transaction: one commit (one WAL flush) for many records.
REPLAY_BATCH = 64

Record = SaveRecord | DeleteRecord
Batch = list[tuple[Path, Record]]


class Replayer:
    """Drains the spool into PostgreSQL; :meth:`step` is one pass of the background thread."""

    def __init__(self, pg: PostgresStore, spool: Spool, health: Health, writer: SpoolWriter,
                 interval_s: float, wait_s: float) -> None:
        self.pg = pg
        self.spool = spool
        self.health = health
        self.writer = writer
        self.interval_s = interval_s
        self.wait_s = wait_s  # how long a turn waits for a running pass before replaying its backlog
        self.last_replay: dict[str, Any] | None = None
        self._replaying = threading.Lock()  # one replay pass at a time in this process
        self._waiting = 0  # turns waiting for it: a background pass stops early for them
        self._waiting_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the background thread

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="isotope-spool-replay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.health.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.health.wake.wait(self.interval_s)
            self.health.wake.clear()
            if self._stop.is_set():
                return
            try:
                self.step()
            except Exception:  # a background thread must outlive any one failure
                log.exception("outage spool replay failed; retrying in %.1f s", self.interval_s)

    def step(self) -> None:
        """Recover if PostgreSQL answers again, then replay the spool to its end."""
        if self.health.down:
            if self.pg.conninfo is None:
                try:
                    self.pg.open()  # the embedded server failed to start earlier
                except StoreUnavailable:
                    return
            if not self.pg.probe():
                return
            self.pg.reset_pool()
            self.health.recovered()
        # Drain to the end now: turns on a session with a backlog keep spooling until it is
        # replayed, so one pass per interval would trail them by an interval each time.
        while not (self._stop.is_set() or self.health.down or self._waiting) and self.spool.pending():
            if not self.replay()["replayed"]:
                return

    # ------------------------------------------------------------------ replaying

    def drain(self, session_id: str) -> bool:
        """True when the session has no spooled writes left (replaying them first if possible).

        If the background thread is replaying, it is asked to stop after its current batch and
        this call waits for it (at most ``wait_s``), then replays this session's backlog itself.
        Spooling instead would keep the session behind the replay for as long as turns arrive
        faster than a pass ends.
        """
        if not self.spool.has_pending(session_id):
            return True
        with self._waiting_lock:
            self._waiting += 1
        try:
            self.replay(session_id, wait=self.wait_s)
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        return not self.spool.has_pending(session_id)

    def replay(self, session_id: str | None = None, wait: float = 0.0) -> dict[str, Any]:
        """Replay spooled writes into PostgreSQL now (all, or one session's); report counts.

        One replay at a time per data dir: waits up to ``wait`` seconds for another thread of
        this process, and gives up at once if another process is replaying.
        """
        report: dict[str, Any] = {"replayed": 0, "failed": 0, "remaining": 0, "seconds": 0.0}
        if not self._replaying.acquire(timeout=wait):
            report["remaining"] = self.spool.depth()
            return report
        try:
            return self._replay(session_id, report)
        finally:
            self._replaying.release()

    def _replay(self, session_id: str | None, report: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        done: set[str] = set()
        busy: set[str] = set()
        produced: dict[str, int] = {}
        with self.spool.replay_lock() as mine:
            if not mine:
                report["remaining"] = self.spool.depth()
                return report
            pending = self.spool.pending(session_id)
            while pending:
                if session_id is None and self._waiting:
                    break  # a turn waits to replay its own session; the next pass resumes here
                batch = self._next_batch(pending, busy, report)
                if batch and not self._apply(batch, produced, busy, report, done):
                    break
        self.writer.replayed(done)
        report["remaining"] = self.spool.depth()
        report["seconds"] = round(time.perf_counter() - started, 4)
        metrics.SPOOL_DEPTH.set(report["remaining"])
        if report["replayed"] or report["failed"]:
            self.last_replay = {**report, "finished_at": datetime.now(UTC).isoformat()}
            log.warning("outage spool: replayed %d writes in %.2f s (%d failed, %d left)", report["replayed"],
                        report["seconds"], report["failed"], report["remaining"])
        return report

    def _next_batch(self, pending: list[Path], busy: set[str], report: dict[str, Any]) -> Batch:
        """Take up to REPLAY_BATCH readable records off the front of ``pending``."""
        batch: Batch = []
        while pending and len(batch) < REPLAY_BATCH:
            path = pending.pop(0)
            try:
                record = self.spool.read(path)
            except UnreadableRecord as exc:
                self._quarantine(path, exc, None, report)
                continue
            if record is not None and record.session_id not in busy:
                batch.append((path, record))
        return batch

    def _apply(self, batch: Batch, produced: dict[str, int], busy: set[str], report: dict[str, Any],
               done: set[str]) -> bool:
        """Apply a batch in one transaction; one record at a time if that fails. False: stop."""
        try:
            versions = self.pg.apply_spooled_batch([record for _, record in batch], produced)
        except StoreUnavailable as exc:
            self.health.trip(exc, "spool replay")
            return False
        except (IsotopeError, KeyError, TypeError, ValueError) as exc:
            if len(batch) > 1:  # a busy session or a bad record in it: find which, one at a time
                return self._apply_each(batch, produced, busy, report, done)
            path, record = batch[0]
            if isinstance(exc, SessionBusy):
                busy.add(record.session_id)  # its later writes wait too: order is kept
            else:
                self._quarantine(path, exc, record, report)
            return True
        for (path, record), version in zip(batch, versions, strict=True):
            produced[record.write_id] = version
            self.spool.remove(path)  # after the commit: a crash before this replays nothing twice
            done.add(record.session_id)
        metrics.SPOOL_REPLAYED.inc(len(batch))
        report["replayed"] += len(batch)
        return True

    def _apply_each(self, batch: Batch, produced: dict[str, int], busy: set[str], report: dict[str, Any],
                    done: set[str]) -> bool:
        for item in batch:
            if item[1].session_id not in busy and not self._apply([item], produced, busy, report, done):
                return False
        return True

    def _quarantine(self, path: Path, exc: Exception, record: Record | None, report: dict[str, Any]) -> None:
        self.spool.quarantine(path, f"{type(exc).__name__}: {exc}")
        log.error("spooled write %s for session %r cannot be replayed and was moved to %s: %s",
                  record.write_id if record else None, record.session_id if record else None,
                  self.spool.failed, exc)
        report["failed"] += 1
