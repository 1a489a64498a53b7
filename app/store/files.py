"""The file session store: one JSON document per session under ``<data_dir>/sessions``.

It is the former storage the guide keeps working (``postgres_sessions: false``) and the copy
that ``load_session`` reads while PostgreSQL is unreachable. Same semantics as the PostgreSQL
store (versions, expiry, soft delete, the same codec), simpler costs: every save rewrites the
session's file, atomically (temporary file, fsync, rename, fsync of the directory), under an
exclusive ``flock`` so several processes can share one data dir.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.config import StoreConfig
from app.errors import SessionBusy, SessionExists, StoreUnavailable
from app.store import codec
from app.store.base import SaveResult, SessionInfo, StoredSession, StoreStatus
from app.store.delta import MESSAGES, Limits, plan_save
from app.store.private_files import private_dir, write_private

FORMAT = 1


def _now() -> datetime:
    return datetime.now(UTC)


def session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:40]


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class FileSessionStore:
    """Sessions as files. ``open()`` creates the directory; nothing else holds resources."""

    name = "files"

    def __init__(self, data_dir: Path, config: StoreConfig) -> None:
        self.root = Path(data_dir) / "sessions"
        self.config = config
        self._limits = Limits(config.max_message_bytes, config.max_session_bytes, 1 << 62)

    def open(self) -> None:
        try:
            private_dir(self.root)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the file store at {self.root}: {exc.strerror}") from exc
        # Temporary files of writers killed mid-write (``<key>.tmp<pid>``): never renamed, never read.
        for path in self.root.glob("*.tmp*"):
            pid = path.suffix[4:]
            if pid.isdigit() and not pid_alive(int(pid)):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        pass

    def _path(self, session_id: str) -> Path:
        return self.root / f"{session_key(session_id)}.json"

    @contextmanager
    def _flock(self, session_id: str, suffix: str, timeout: float | None = None) -> Iterator[None]:
        path = self.root / f"{session_key(session_id)}.{suffix}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if timeout is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                _flock_with_timeout(fd, timeout, session_id)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _read(self, session_id: str, decode: bool = False) -> dict[str, Any] | None:
        try:
            text = self._path(session_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            doc = codec.loads(text) if decode else json.loads(text)
        except (ValueError, codec.CodecError) as exc:
            raise codec.CodecError(f"session {session_id!r}: its file cannot be decoded: {exc}") from exc
        if not isinstance(doc, dict):
            raise codec.CodecError(f"session {session_id!r}: its file is not a session document")
        return doc if doc.get("session_id") == session_id else None

    def _write(self, doc: dict[str, Any]) -> None:
        path = self._path(doc["session_id"])
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        write_private(path, json.dumps(doc, ensure_ascii=False, separators=(",", ":")), tmp)
        fsync_dir(self.root)

    # ------------------------------------------------------------------ writes

    def create(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
               expires_in_hours: float | None) -> SaveResult:
        """Store a new session; SessionExists if the id is taken (checked under the file lock)."""
        return self.save(session_id, data, metadata, expires_in_hours, must_be_new=True)

    def save(self, session_id: str, data: dict[str, Any], metadata: dict[str, Any] | None,
             expires_in_hours: float | None, version: int | None = None, must_be_new: bool = False) -> SaveResult:
        """Rewrite the session's file. ``version`` overrides the counter (outage copies follow
        the version PostgreSQL will give the write)."""
        plan = plan_save(session_id, data, metadata, expires_in_hours, None, self._limits)
        now = _now()
        with self._io("save"), self._flock(session_id, "lock"):
            old = self._read(session_id)
            if must_be_new and old is not None:
                raise SessionExists(session_id)
            doc = {
                "format": FORMAT,
                "session_id": session_id,
                "version": version if version is not None else (old["version"] + 1) if old else 1,
                "created_at": old["created_at"] if old else now.isoformat(),
                "last_updated": now.isoformat(),
                "expires_at": (now + timedelta(hours=expires_in_hours)).isoformat()
                if expires_in_hours is not None else (old or {}).get("expires_at"),
                "is_active": True,
                "metadata": json.loads(plan.metadata_text) if plan.metadata_text is not None
                else (old or {}).get("metadata", {}),
                "message_count": plan.message_count,
                "data": _document(data, plan.all_texts or [], plan.upsert_members, plan.session_data_text),
            }
            self._write(doc)
        return SaveResult(session_id=session_id, version=doc["version"], message_count=plan.message_count,
                          backend=self.name, skipped=plan.skipped, appended=plan.message_count)

    def delete(self, session_id: str, soft: bool) -> bool:
        with self._io("delete"), self._flock(session_id, "lock"):
            doc = self._read(session_id)
            if doc is None:
                return False
            if soft:
                doc["is_active"] = False
                self._write(doc)
            else:
                self._path(session_id).unlink()
                fsync_dir(self.root)
            return True

    def cleanup_expired(self, hard: bool, inactive_for_hours: float | None = None) -> int:
        """Same rules as the PostgreSQL store: see ``sql._DOOMED`` for what hard cleanup removes."""
        done = 0
        for doc in self._scan():
            sid = doc["session_id"]
            with self._flock(sid, "lock"):
                current = self._read(sid)
                now = _now()
                if current is None:
                    continue
                if hard and _doomed(current, now, inactive_for_hours):
                    self._path(sid).unlink()
                    fsync_dir(self.root)
                    done += 1
                elif not hard and current["is_active"] and _expired(current, now):
                    current["is_active"] = False
                    self._write(current)
                    done += 1
        return done

    # ------------------------------------------------------------------ reads

    def load(self, session_id: str) -> StoredSession | None:
        with self._io("load"):
            doc = self._read(session_id, decode=True)
        if doc is None or not doc["is_active"] or _expired(doc, _now()):
            return None
        data = doc.get("data")
        if not isinstance(data, dict):
            raise codec.CodecError(f"session {session_id!r}: its file holds no session data object")
        if _is_absent_marker(data.get(MESSAGES)):
            del data[MESSAGES]
        info = _info(doc, _now(), decoded=True)
        return StoredSession(data=data, backend=self.name, **info)

    def info(self, session_id: str, include_inactive: bool = False) -> SessionInfo | None:
        with self._io("info"):
            doc = self._read(session_id)
        if doc is None:
            return None
        info = _info(doc, _now())
        return info if include_inactive or info["is_active"] else None

    def list(self, limit: int, offset: int, include_inactive: bool) -> list[SessionInfo]:
        now = _now()
        infos = [_info(doc, now) for doc in self._scan()]
        if not include_inactive:
            infos = [i for i in infos if i["is_active"]]
        infos.sort(key=lambda i: i["last_updated"], reverse=True)
        return infos[offset:offset + limit]

    def count(self, include_inactive: bool) -> int:
        now = _now()
        return sum(1 for doc in self._scan() if include_inactive or _info(doc, now)["is_active"])

    def active_ids(self) -> builtins.list[str]:
        return [i["session_id"] for i in self.list(1 << 62, 0, False)]

    def statistics(self) -> dict[str, Any]:
        now = _now()
        infos = [_info(doc, now) for doc in self._scan()]
        active = [i for i in infos if i["is_active"]]
        created = [i["created_at"] for i in infos]
        return {
            "total_sessions": len(infos),
            "active_sessions": len(active),
            "inactive_sessions": len(infos) - len(active),
            "expired_sessions": sum(1 for i in infos if i["expires_at"] and i["expires_at"] <= now),
            "total_messages": sum(i["message_count"] for i in infos),
            "avg_messages_per_session": round(sum(i["message_count"] for i in active) / len(active), 2)
            if active else 0.0,
            "oldest_session": min(created, default=None),
            "newest_session": max(created, default=None),
            "sessions_last_24h": sum(1 for c in created if c > now - timedelta(hours=24)),
            "storage_bytes": sum(p.stat().st_size for p in self.root.glob("*.json")),
            "backend": self.name,
        }

    def ping(self) -> dict[str, Any]:
        started = time.perf_counter()
        ok = self.root.is_dir() and os.access(self.root, os.W_OK)
        usage = shutil.disk_usage(self.root) if ok else None
        result: dict[str, Any] = {
            "ok": ok, "backend": self.name, "database": str(self.root), "host": None, "port": None,
            "server_version": None, "latency_ms": round((time.perf_counter() - started) * 1e3, 3),
        }
        if usage is not None:
            result["free_bytes"] = usage.free
        if not ok:
            result["error"] = f"the file store directory {self.root} is missing or not writable"
        return result

    @contextmanager
    def lock(self, session_id: str, timeout: float | None = None) -> Iterator[None]:
        wait = self.config.lock_timeout_s if timeout is None else timeout
        with self._flock(session_id, "turn", wait):
            yield

    @property
    def fallback_active(self) -> bool:
        return False

    def status(self) -> StoreStatus:
        return StoreStatus(backend=self.name, fallback_active=False, down_since=None, reason=None,
                           spool_depth=0, last_replay=None)

    def remove_copy(self, session_id: str, version: int | None = None) -> None:
        """Delete a session's file (after its spooled writes reached PostgreSQL)."""
        with self._flock(session_id, "lock"):
            doc = self._read(session_id)
            if doc is not None and (version is None or doc["version"] <= version):
                self._path(session_id).unlink(missing_ok=True)
        for suffix in ("lock", "turn"):
            (self.root / f"{session_key(session_id)}.{suffix}").unlink(missing_ok=True)

    def _scan(self) -> Iterator[dict[str, Any]]:
        if not self.root.is_dir():
            return
        for path in self.root.glob("*.json"):
            try:
                yield json.loads(path.read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError):
                continue  # deleted meanwhile, or a torn file from an older crash

    @contextmanager
    def _io(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise StoreUnavailable(f"the file store at {self.root} failed during {what}: {exc}") from exc


def _document(data: dict[str, Any], texts: list[str], members: dict[str, str],
              session_data_text: str) -> dict[str, Any]:
    """The encoded session as one JSON document (members inline, messages as a list)."""
    doc: dict[str, Any] = json.loads(session_data_text)
    for name, text in members.items():
        doc[name] = json.loads(text)
    if isinstance(data.get(MESSAGES), list):
        doc[MESSAGES] = [json.loads(t) for t in texts]
    elif MESSAGES not in data:
        doc.pop(MESSAGES, None)
    return doc


def _is_absent_marker(value: Any) -> bool:
    return isinstance(value, dict) and value.get(codec.TAG) == "messages"


def _doomed(doc: dict[str, Any], now: datetime, hours: float | None) -> bool:
    if hours is None:
        return _expired(doc, now)
    cutoff = now - timedelta(hours=hours)
    expires = _ts(doc.get("expires_at"))
    updated = _ts(doc["last_updated"])
    return (expires is not None and expires <= cutoff) or (
        not doc["is_active"] and updated is not None and updated <= cutoff)


def _expired(doc: dict[str, Any], now: datetime) -> bool:
    expires = _ts(doc.get("expires_at"))
    return expires is not None and expires <= now


def _info(doc: dict[str, Any], now: datetime, decoded: bool = False) -> SessionInfo:
    metadata = doc.get("metadata") or {}
    return SessionInfo(
        session_id=doc["session_id"], metadata=metadata if decoded else codec.decode(metadata),
        created_at=_ts(doc["created_at"]),  # type: ignore[typeddict-item]
        last_updated=_ts(doc["last_updated"]),  # type: ignore[typeddict-item]
        expires_at=_ts(doc.get("expires_at")), version=doc["version"],
        is_active=bool(doc["is_active"]) and not _expired(doc, now), message_count=doc["message_count"],
    )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flock_with_timeout(fd: int, timeout: float, session_id: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise SessionBusy(
                    f"session {session_id!r} is busy in another turn (waited {timeout:g} s); retry"
                ) from None
            time.sleep(delay)  # flock has no timed wait; poll with a short back-off
            delay = min(delay * 2, 0.1)


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` running (the writer of a temporary file, say)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
