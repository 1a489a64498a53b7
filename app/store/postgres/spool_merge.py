"""Applying the outage spool's records to PostgreSQL: each exactly once, merged with what other
instances wrote meanwhile.

Each record's ``write_id`` is inserted into ``isotope_spool_applied`` in the transaction that
applies it, and the spool file is removed only after that commit: a crash anywhere in between
replays nothing twice. A chain of deltas applies exactly when nobody else wrote in between; when
somebody did, its messages are appended after theirs, so both sides are kept.
"""

from __future__ import annotations

import logging

from app.errors import SessionBusy
from app.store.delta import SessionCache
from app.store.outage.record import DeleteRecord, SaveRecord
from app.store.postgres import sql
from app.store.postgres.connections import Connection, Connections, one
from app.store.postgres.session_lock import SessionLocks, try_for_transaction
from app.store.postgres.writes import first_difference, insert_messages, write_members

log = logging.getLogger("isotope.store.postgres")


class SpoolMerge:
    """Replays batches of spooled records, each batch in one transaction."""

    def __init__(self, connections: Connections, locks: SessionLocks, cache: SessionCache) -> None:
        self._connections = connections
        self._locks = locks
        self._cache = cache

    def apply_batch(self, records: list[SaveRecord | DeleteRecord], produced: dict[str, int]) -> list[int]:
        """Apply spooled writes, in order, in one transaction: all of them exactly once, or none.

        Raises :class:`SessionBusy` when a turn (of any instance) holds one of their sessions: a
        spooled write merged under a running turn would be cut away by that turn's save.

        ``produced`` maps earlier records' write ids to the versions they produced in this
        replay. One transaction for many records: one commit (one WAL flush) instead of one each.
        """
        sids = sorted({record.session_id for record in records})

        def work(conn: Connection, _: int) -> list[int]:
            with conn.transaction():
                for sid in sids:
                    if not try_for_transaction(conn, sid):
                        raise SessionBusy(f"session {sid!r} is in a turn; its spooled writes wait for the next pass")
                seen = dict(produced)
                versions = []
                for record in records:
                    seen[record.write_id] = _apply(conn, record, seen)
                    versions.append(seen[record.write_id])
                return versions

        # A turn holding its session's lock replays that session on the lock's own connection.
        held = self._locks.connection(sids[0]) if len(sids) == 1 else None
        versions = self._connections.run("spool replay", work, held)
        for sid in sids:
            self._cache.drop(sid)
        return versions


def _apply(conn: Connection, rec: SaveRecord | DeleteRecord, produced: dict[str, int]) -> int:
    sid, ids = rec.session_id, {"sid": rec.session_id, "wid": rec.write_id}
    done = one(conn, sql.SPOOL_ALREADY_APPLIED, ids)
    if done is not None:
        return int(done["version"])
    if isinstance(rec, DeleteRecord):
        row = one(conn, sql.SOFT_DELETE if rec.soft else sql.HARD_DELETE, {"sid": sid})
        conn.execute(sql.SPOOL_MARK_APPLIED, {**ids, "version": 0})
        if row is None:
            log.info("spooled delete of session %r found nothing to delete", sid)
        return 0
    locked = one(conn, sql.LOCK_ROW, {"sid": sid})
    if locked is None:
        version = _create(conn, rec)
    else:
        version = _update(conn, rec, produced, int(locked["version"]), int(locked["message_count"]))
    conn.execute(sql.SPOOL_MARK_APPLIED, {**ids, "version": version})
    return version


def _create(conn: Connection, rec: SaveRecord) -> int:
    sid = rec.session_id
    if not rec.full:
        log.warning("session %r vanished while its writes were spooled; recreating it from "
                    "the spooled messages only", sid)
    row = one(conn, sql.CREATE_ROW_REPLAY, {
        "sid": sid, "data": rec.session_data, "count": len(rec.texts), "meta": rec.metadata,
        "expires_at": rec.expires_at, "created_at": rec.created_at,
    })
    assert row is not None
    insert_messages(conn, sid, 0, rec.texts)
    write_members(conn, sid, rec.members_upsert)
    return int(row["version"])


def _expected_version(conn: Connection, rec: SaveRecord, produced: dict[str, int]) -> int | None:
    """The version the record's writer assumed PostgreSQL holds."""
    if rec.prev is None:
        return rec.base_version
    expected = produced.get(rec.prev)
    if expected is None:  # replayed by an earlier pass (or another process)
        found = one(conn, sql.SPOOL_ALREADY_APPLIED, {"sid": rec.session_id, "wid": rec.prev})
        expected = int(found["version"]) if found is not None else None
    return expected


def _update(conn: Connection, rec: SaveRecord, produced: dict[str, int], version: int, stored: int) -> int:
    sid, texts = rec.session_id, rec.texts
    expected = _expected_version(conn, rec, produced)
    if rec.uncertain and expected is not None and version == expected + 1 and texts:
        row = one(conn, sql.TAIL_MATCHES, {"sid": sid, "base": rec.base_count, "msgs": texts})
        if row is not None and row["matched"] == len(texts):
            return version  # the write landed before the connection died
    if rec.full:
        k = first_difference(conn, sid, texts)
        if expected == version:
            # Nobody wrote since the state the writer saw: its list is the session's history
            # (an edited or shortened history included), exactly as a save would have made it.
            base, new = k, texts[k:]
            conn.execute(sql.CUT_MESSAGES, {"sid": sid, "base": base})
        else:
            base, new = (stored, texts[stored:]) if k >= stored else (stored, texts[k:])
    elif expected == version and (rec.prev_count is None or stored == rec.prev_count):
        base, new = rec.base_count, texts
        if rec.rewrite:
            conn.execute(sql.CUT_MESSAGES, {"sid": sid, "base": base})
    else:
        # Others wrote meanwhile, or an earlier write of this chain was merged after theirs:
        # keep what is stored, append ours.
        base, new = stored, texts
    insert_messages(conn, sid, base, new)
    if rec.members_full:
        write_members(conn, sid, rec.members_upsert, keep=list(rec.members_upsert))
    else:
        write_members(conn, sid, rec.members_upsert, delete=rec.members_delete)
    row = one(conn, sql.UPDATE_ROW_REPLAY, {
        "sid": sid, "data": rec.session_data, "count": base + len(new), "meta": rec.metadata,
        "set_expiry": rec.expires_at is not None, "expires_at": rec.expires_at,
    })
    assert row is not None
    return int(row["version"])
