"""Saving to PostgreSQL: append-only messages, one statement per save on the hot path.

A save is planned in memory first (:func:`app.store.delta.plan_save`): when this process knows
the stored version, the new messages and changed large members go out in one ``APPEND``
statement (one round trip, one commit) guarded by ``version = expected``. Otherwise (new
process, another writer, a history rewrite) a short transaction locks the row, lets PostgreSQL
find the first differing message, cuts there and appends the rest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, LiteralString

from app.errors import SessionExists, StaleSession
from app.store.base import SaveResult
from app.store.delta import CacheEntry, Limits, Plan, SessionCache, plan_save
from app.store.postgres import sql
from app.store.postgres.connections import Connection, Connections, Row, every, one
from app.store.postgres.session_lock import SessionLocks, try_for_transaction


class Raced(Exception):
    """Another writer created the row between our lock attempt and our insert; go again."""


_CHANGED = object()  # the deferred prefix check found an old message edited in place


class Writes:
    """Saves, creates, deletes and expiry of the PostgreSQL store."""

    def __init__(self, name: str, connections: Connections, locks: SessionLocks, cache: SessionCache,
                 limits: Limits) -> None:
        self.name = name
        self._connections = connections
        self._locks = locks
        self._cache = cache
        self._limits = limits

    def save(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
             expires_in_hours: float | None) -> SaveResult:
        def replan(entry: CacheEntry | None = None) -> Plan:
            return plan_save(session_id, data, metadata, expires_in_hours, entry, self._limits)

        cached = self._cache.get(session_id)
        plan = plan_save(session_id, data, metadata, expires_in_hours, cached, self._limits, defer_check=True)
        # Until the outcome is known the cache must not vouch for the stored state.
        self._cache.drop(session_id)

        locked = self._locks.holds(session_id)

        def write(conn: Connection, attempt: int) -> tuple[int, Plan]:
            current = plan if attempt == 1 else replan()
            if attempt > 1 and locked:
                return self._write_after_lost_lock(conn, current, replan)
            if current.expected_version is not None and not current.rewrite:
                version = self._append(conn, current)
                if isinstance(version, int):
                    return version, current
                # An old message changed in place: a rewrite from the first difference, still
                # guarded by the cached version. Or the version moved: a full diff.
                current = replan(cached) if version is _CHANGED else replan()
            return self._locked_write(conn, current, replan)

        version, used = self._connections.run("save", write, self._locks.connection(session_id))
        used.entry.version = version
        self._cache.put(session_id, used.entry)
        return SaveResult(
            session_id=session_id, version=version, message_count=used.message_count, backend=self.name,
            skipped=used.skipped, appended=len(used.new_texts), rewritten=used.rewrite,
        )

    def create(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
               expires_in_hours: float | None) -> SaveResult:
        """Store a new session; SessionExists if the id is taken (the primary key decides)."""
        plan = plan_save(session_id, data, metadata, expires_in_hours, None, self._limits)

        def write(conn: Connection, _: int) -> int:
            with conn.transaction():
                row = one(conn, sql.CREATE_ROW, row_params(plan))
                if row is None:
                    raise SessionExists(session_id)
                insert_messages(conn, session_id, 0, plan.all_texts or [])
                write_members(conn, session_id, plan.upsert_members)
                return int(row["version"])

        version = self._connections.run("create", write, self._locks.connection(session_id))
        plan.entry.version = version
        self._cache.put(session_id, plan.entry)
        return SaveResult(session_id=session_id, version=version, message_count=plan.message_count,
                          backend=self.name, skipped=plan.skipped, appended=plan.message_count)

    def _append(self, conn: Connection, plan: Plan) -> int | object | None:
        """The one-statement save: the new row's version, None when the version moved, or
        _CHANGED when an old message was edited in place (nothing was sent then)."""
        if plan.verify is not None and not plan.verify():
            return _CHANGED
        statement, params = _append(plan)
        row = one(conn, statement, params)
        return int(row["version"]) if row is not None else None

    def _write_after_lost_lock(self, conn: Connection, plan: Plan,
                               replan: Callable[[], Plan]) -> tuple[int, Plan]:
        """Save a turn whose lock connection died (the lock died with it): another instance may
        have taken the session and run a turn meanwhile. Write only while no turn holds the
        session, and only by appending: cutting the stored history here would delete that other
        turn (it holds the lock now, or has already saved). Otherwise StaleSession: this turn is
        not acknowledged and nothing stored changes."""
        sid = plan.session_id
        stale = StaleSession(f"session {sid!r}: this turn lost its lock with its connection and another turn "
                             "has taken the session; the turn was not saved, send the message again")
        try:
            with conn.transaction():
                if not try_for_transaction(conn, sid):
                    raise stale
                return self._locked_write_once(conn, plan, replan, keep_stored=stale)
        except Raced:
            raise stale from None

    def _locked_write(self, conn: Connection, plan: Plan, replan: Callable[[], Plan]) -> tuple[int, Plan]:
        while True:
            try:
                with conn.transaction():
                    return self._locked_write_once(conn, plan, replan)
            except Raced:
                continue

    def _locked_write_once(self, conn: Connection, plan: Plan, replan: Callable[[], Plan],
                           keep_stored: Exception | None = None) -> tuple[int, Plan]:
        sid = plan.session_id
        locked = one(conn, sql.LOCK_ROW, {"sid": sid})
        known = locked is not None and plan.expected_version == locked["version"]
        if not known and plan.all_texts is None:
            plan = replan()
        params = row_params(plan)
        if locked is None:
            row = one(conn, sql.CREATE_ROW, params)
            if row is None:
                raise Raced()
            insert_messages(conn, sid, 0, plan.all_texts or [])
            write_members(conn, sid, plan.upsert_members)
            return int(row["version"]), plan
        if known:
            base, texts = plan.base_count, plan.new_texts
        else:
            texts_all = plan.all_texts or []
            base = first_difference(conn, sid, texts_all)
            if keep_stored is not None and base < locked["message_count"]:
                raise keep_stored
            texts = texts_all[base:]
            plan.rewrite = True
        conn.execute(sql.CUT_MESSAGES, {"sid": sid, "base": base})
        insert_messages(conn, sid, base, texts)
        if known:
            write_members(conn, sid, plan.upsert_members, delete=plan.delete_members)
        else:
            write_members(conn, sid, plan.upsert_members, keep=list(plan.upsert_members))
        row = one(conn, sql.UPDATE_ROW, params)
        assert row is not None  # the row is locked by this transaction
        return int(row["version"]), plan

    def delete(self, session_id: str, soft: bool) -> bool:
        statement = sql.SOFT_DELETE if soft else sql.HARD_DELETE
        self._cache.drop(session_id)
        row = self._connections.run("delete", lambda conn, _: one(conn, statement, {"sid": session_id}),
                                    self._locks.connection(session_id))
        return row is not None

    def cleanup_expired(self, hard: bool, inactive_for_hours: float | None = None) -> int:
        select = sql.EXPIRED_OR_STALE if hard else sql.EXPIRED_ACTIVE
        change = sql.HARD_DELETE_IF_EXPIRED if hard else sql.DEACTIVATE_IF_EXPIRED
        params: dict[str, Any] = {"batch": 500, "stale_hours": inactive_for_hours}
        done = 0
        while True:
            rows = self._connections.run("cleanup", lambda conn, _: every(conn, select, params))
            ids = [row["session_id"] for row in rows]
            for sid in ids:
                self._cache.drop(sid)
                one_params = {"sid": sid, "stale_hours": inactive_for_hours}
                found = self._connections.run("cleanup", functools.partial(_fetch_one, change, one_params))
                done += found is not None
            if len(ids) < params["batch"]:
                return done


def _fetch_one(statement: LiteralString, params: dict[str, Any], conn: Connection, _: int) -> Row | None:
    return one(conn, statement, params)


def first_difference(conn: Connection, sid: str, texts: list[str]) -> int:
    """Where the stored history first differs from ``texts`` (their length if it never does)."""
    row: Row | None = one(conn, sql.FIRST_DIFFERENCE, {"sid": sid, "msgs": texts})
    return len(texts) if row is None or row["first"] is None else int(row["first"])


_STATEMENTS: dict[tuple[int, bool], str] = {}


def _append(plan: Plan) -> tuple[Any, dict[str, Any]]:
    texts = plan.new_texts
    members = bool(plan.upsert_members or plan.delete_members)
    shape = (len(texts) if len(texts) <= sql.APPEND_VALUES_MAX else -1, members)
    statement = _STATEMENTS.get(shape)
    if statement is None:
        statement = _STATEMENTS[shape] = sql.append_statement(len(texts), members)
    params = row_params(plan)
    params["expected"] = plan.expected_version
    params["base"] = plan.base_count
    if len(texts) <= sql.APPEND_VALUES_MAX:
        for i, text in enumerate(texts):
            params[f"m{i}"] = text
    else:
        params["msgs"] = texts
    if members:
        params.update(mk=list(plan.upsert_members), mv=list(plan.upsert_members.values()),
                      **{"del": plan.delete_members})
    return statement, params


def row_params(plan: Plan) -> dict[str, Any]:
    return {"sid": plan.session_id, "data": plan.session_data_text, "meta": plan.metadata_text,
            "hours": plan.expires_in_hours}


def insert_messages(conn: Connection, sid: str, base: int, texts: list[str]) -> None:
    if texts:
        conn.execute(sql.INSERT_MESSAGES, {"sid": sid, "base": base, "msgs": texts})


def write_members(conn: Connection, sid: str, upsert: dict[str, str],
                  keep: list[str] | None = None, delete: list[str] | None = None) -> None:
    if upsert:
        conn.execute(sql.UPSERT_MEMBERS, {"sid": sid, "mk": list(upsert), "mv": list(upsert.values())})
    if keep is not None:
        conn.execute(sql.DELETE_OTHER_MEMBERS, {"sid": sid, "keep": keep})
    elif delete:
        conn.execute(sql.DELETE_MEMBERS, {"sid": sid, "names": delete})
