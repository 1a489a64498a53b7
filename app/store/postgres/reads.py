"""Reading from PostgreSQL: a session with its messages and members, listings, counts, statistics."""

from __future__ import annotations

import builtins
import time
from datetime import datetime
from typing import Any

from app.errors import IsotopeError
from app.store import codec
from app.store.base import SessionInfo, StoredSession
from app.store.delta import SessionCache, assemble, entry_from_loaded
from app.store.postgres import sql
from app.store.postgres.connections import Connections, Row, every, one, safe_params
from app.store.postgres.session_lock import SessionLocks
from app.store.schema import LATEST_VERSION, schema_version


class Reads:
    """Everything the PostgreSQL store reads; a load also primes the save planner's cache."""

    def __init__(self, name: str, connections: Connections, locks: SessionLocks, cache: SessionCache) -> None:
        self.name = name
        self._connections = connections
        self._locks = locks
        self._cache = cache

    def load(self, session_id: str) -> StoredSession | None:
        row = self._connections.run("load", lambda conn, _: one(conn, sql.LOAD, {"sid": session_id}),
                                    self._locks.connection(session_id))
        if row is None:
            self._cache.drop(session_id)
            return None
        try:
            session_data = codec.loads(row["session_data"])
            metadata = codec.loads(row["metadata"]) if row["metadata"] is not None else {}
            messages = codec.loads(row["messages"]) if row["messages"] is not None else []
            members = codec.loads(row["members"]) if row["members"] is not None else {}
            data = assemble(session_data, messages, members)
        except codec.CodecError as exc:
            self._cache.drop(session_id)
            raise codec.CodecError(f"session {session_id!r} cannot be decoded: {exc}") from exc
        marker = session_data.get("messages") if isinstance(session_data.get("messages"), dict) else {}
        count = int(marker.get("count", 0)) if marker.get(codec.TAG) == "messages" else 0
        self._cache.put(session_id, entry_from_loaded(
            row["version"], data, set(members), int(marker.get("bytes", 0) if count else 0), row["messages"]))
        return StoredSession(
            session_id=session_id, data=data, metadata=metadata if isinstance(metadata, dict) else {},
            version=row["version"], created_at=row["created_at"], last_updated=row["last_updated"],
            expires_at=row["expires_at"], is_active=row["is_active"], message_count=count, backend=self.name,
        )

    def info(self, session_id: str, include_inactive: bool = False) -> SessionInfo | None:
        row = self._connections.run("info", lambda conn, _: one(conn, sql.INFO, {"sid": session_id}),
                                    self._locks.connection(session_id))
        if row is None:
            return None
        info = _info(row)
        return info if include_inactive or info["is_active"] else None

    def list(self, limit: int, offset: int, include_inactive: bool) -> builtins.list[SessionInfo]:
        statement = sql.LIST_ALL if include_inactive else sql.LIST_ACTIVE
        row = self._connections.run("list", lambda conn, _: one(conn, statement, {"limit": limit, "offset": offset}))
        return [info_from_json(item) for item in codec.loads(row["listing"])] if row else []

    def count(self, include_inactive: bool) -> int:
        statement = sql.COUNT_ALL if include_inactive else sql.COUNT_ACTIVE
        row = self._connections.run("count", lambda conn, _: one(conn, statement))
        return int(row["n"]) if row else 0

    def active_ids(self) -> builtins.list[str]:
        rows = self._connections.run("restore", lambda conn, _: every(conn, sql.ACTIVE_IDS))
        return [row["session_id"] for row in rows]

    def statistics(self) -> dict[str, Any]:
        row = self._connections.run("statistics", lambda conn, _: one(conn, sql.STATISTICS))
        assert row is not None
        total, active = int(row["total_sessions"]), int(row["active_sessions"])
        return {
            "total_sessions": total,
            "active_sessions": active,
            "inactive_sessions": total - active,
            "expired_sessions": int(row["expired_sessions"]),
            "total_messages": int(row["total_messages"]),
            "avg_messages_per_session": round(float(row["avg_messages_per_session"]), 2),
            "oldest_session": row["oldest_session"],
            "newest_session": row["newest_session"],
            "sessions_last_24h": int(row["sessions_last_24h"]),
            "storage_bytes": int(row["storage_bytes"]),
            "backend": self.name,
        }

    def ping(self) -> dict[str, Any]:
        params = safe_params(self._connections.conninfo)
        result: dict[str, Any] = {
            "ok": False, "backend": self.name, "embedded": self._connections.embedded is not None,
            "database": params.get("dbname"), "host": params.get("host"),
            "port": int(params["port"]) if str(params.get("port", "")).isdigit() else 5432,
            "server_version": None, "latency_ms": None,
        }
        try:
            result["schema_version"] = self._connections.run("schema version", lambda conn, _: schema_version(conn))
            result["schema_latest"] = LATEST_VERSION
            started = time.perf_counter()
            row = self._connections.run("connection test", lambda conn, _: one(conn, sql.PING))
            result["latency_ms"] = round((time.perf_counter() - started) * 1e3, 3)
            assert row is not None
            result.update(ok=True, **row)
        except IsotopeError as exc:
            result["error"] = str(exc)
        return result


def _info(row: Row) -> SessionInfo:
    metadata = codec.loads(row["metadata"]) if row["metadata"] is not None else {}
    return SessionInfo(
        session_id=row["session_id"], metadata=metadata if isinstance(metadata, dict) else {},
        created_at=row["created_at"], last_updated=row["last_updated"], expires_at=row["expires_at"],
        version=row["version"], is_active=bool(row["is_active"]), message_count=int(row["message_count"]),
    )


_timestamp = datetime.fromisoformat


def info_from_json(item: builtins.list[Any]) -> SessionInfo:
    """One element of a JSON listing: [id, metadata, created, updated, expires, version, active, count]."""
    metadata = item[1]
    return SessionInfo(
        session_id=item[0], metadata=metadata if isinstance(metadata, dict) else {},
        created_at=_timestamp(item[2]), last_updated=_timestamp(item[3]),
        expires_at=_timestamp(item[4]) if item[4] is not None else None, version=item[5],
        is_active=item[6], message_count=item[7],
    )
