"""Writing to the outage spool: a save or delete acknowledged while PostgreSQL cannot take it.

A spooled save is planned like a PostgreSQL save (:func:`app.store.delta.plan_save`), as a delta
on what this process knows PostgreSQL holds, and written twice: as a spool record (the durable
copy, replayed into PostgreSQL later) and into the file store (the copy ``load`` reads until
then). Consecutive writes of a session chain (``prev``), so replay applies them exactly when
nobody else wrote in between.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app import metrics
from app.store import codec
from app.store.base import SaveResult, SessionInfo
from app.store.delta import CacheEntry, entry_from_loaded, plan_save
from app.store.files import FileSessionStore
from app.store.lru import BoundedLRU
from app.store.outage.record import DeleteRecord, SaveRecord, UnreadableRecord
from app.store.outage.spool import Spool
from app.store.postgres import PostgresStore


class SpoolWriter:
    """Spooled saves and deletes, and what this process chained them on."""

    def __init__(self, pg: PostgresStore, files: FileSessionStore, spool: Spool,
                 known: BoundedLRU[SessionInfo]) -> None:
        self.pg = pg
        self.files = files
        self.spool = spool
        self.known = known
        self.lock = threading.RLock()  # one spooled write at a time; replay's clean-up takes it too
        self._cache: dict[str, CacheEntry] = {}  # what the last spooled write left, per session
        self._prev: dict[str, str] = {}  # the write id of that write

    def has_written(self, session_id: str) -> bool:
        return session_id in self._cache

    def save(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
             hours: float | None, uncertain: bool) -> SaveResult:
        with self.lock:
            seed = self._cache.get(session_id)
            prev = self._prev.get(session_id)
            base_version = None
            if seed is None:
                seed, prev, base_version = self._seed(session_id)
            if seed is None and (known := self.known.get(session_id)) is not None:
                # A whole-history write, but based on the version PostgreSQL last showed: replay
                # applies it exactly (edits included) if nobody else wrote since, else merges.
                base_version = known["version"]
            plan = plan_save(session_id, data, metadata, hours, seed, self.pg.limits)
            full = plan.all_texts is not None
            now = datetime.now(UTC)
            if seed is not None:
                version = seed.version + 1
            else:
                info = self.files.info(session_id, include_inactive=True) or self.known.get(session_id)
                version = info["version"] + 1 if info is not None else 1
            record = SaveRecord(
                write_id=str(uuid.uuid4()), session_id=session_id, acked_at=now.isoformat(), prev=prev,
                base_version=base_version, prev_count=seed.count if seed is not None and not full else None,
                base_count=plan.base_count, rewrite=plan.rewrite, full=full,
                texts=plan.all_texts if plan.all_texts is not None else plan.new_texts,
                session_data=plan.session_data_text, members_upsert=plan.upsert_members,
                members_delete=plan.delete_members, members_full=full, metadata=plan.metadata_text,
                created_at=now.isoformat(),
                expires_at=(now + timedelta(hours=hours)).isoformat() if hours is not None else None,
                uncertain=uncertain,
            )
            self.spool.append(record)
            self.files.save(session_id, data, metadata, hours, version=version)
            plan.entry.version = version
            self._cache[session_id] = plan.entry
            self._prev[session_id] = record.write_id
            metrics.SPOOL_DEPTH.inc()
        return SaveResult(session_id=session_id, version=version, message_count=plan.message_count,
                          backend="spool", skipped=plan.skipped, appended=len(plan.new_texts),
                          rewritten=plan.rewrite)

    def _seed(self, session_id: str) -> tuple[CacheEntry | None, str | None, int | None]:
        """What the first spooled write of a session (in this process) is a delta against.

        PostgreSQL's state as this process last saw it, if it remembers; else, when earlier
        writes of the session are still spooled (a process that died during the outage), the
        local copy they produced, chained after the last of them. Otherwise nothing: the write
        carries the whole message list.
        """
        entry = self.pg.cache_entry(session_id)
        if entry is not None:
            return entry, None, entry.version
        pending = self.spool.pending(session_id)
        try:
            last = self.spool.read(pending[-1]) if pending else None
        except UnreadableRecord:
            last = None  # replay quarantines it; chain nothing to it
        if last is None:
            return None, None, None
        stored = self.files.load(session_id)
        if stored is None:
            return None, None, None
        messages = stored.data.get("messages") if isinstance(stored.data.get("messages"), list) else []
        texts = [codec.dumps(codec.encode(m, "message").value) for m in messages or []]
        size = sum(len(t.encode("utf-8")) for t in texts)
        entry = entry_from_loaded(stored.version, stored.data, set(), size, "[" + ",".join(texts) + "]")
        return entry, last.write_id, None

    def delete(self, session_id: str, soft: bool) -> bool:
        """Spool a delete of a session this process knows of; False for an unknown one."""
        known = self.pg.cache_entry(session_id) is not None or session_id in self._cache \
            or self.files.info(session_id, include_inactive=True) is not None \
            or self.known.get(session_id) is not None
        if not known:
            return False
        self.spool.append(DeleteRecord(soft=soft, write_id=str(uuid.uuid4()), session_id=session_id,
                                       acked_at=datetime.now(UTC).isoformat()))
        self._cache.pop(session_id, None)
        self._prev.pop(session_id, None)
        self.known.put(session_id, None)
        self.files.delete(session_id, soft)
        return True

    def replayed(self, session_ids: set[str]) -> None:
        """Forget the local copies of sessions whose spooled writes have all reached PostgreSQL."""
        with self.lock:
            for sid in session_ids:
                if not self.spool.has_pending(sid):
                    self.known.put(sid, self.files.info(sid, include_inactive=True))
                    self.files.remove_copy(sid)
                    self._cache.pop(sid, None)
                    self._prev.pop(sid, None)
