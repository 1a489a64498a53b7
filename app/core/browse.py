"""What the web console reads, over whichever store answers: search, any session, restore, overview.

With PostgreSQL answering, everything goes to :mod:`app.store.browse` (SQL with indexes). With the
file store (``postgres_sessions: false``) or while PostgreSQL is unreachable, the file store
answers: search then matches ids, names and user ids only (``messages_searched: false``), deleted
sessions show their details without their messages, and restore is refused (it needs PostgreSQL).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import Any

from prometheus_client import REGISTRY

from app.core.postgres_session_manager import SessionManager
from app.errors import StoreUnavailable
from app.store.base import SessionInfo, StoredSession, check_paging, check_session_id
from app.store.postgres import PostgresStore, browse


def _postgres(manager: SessionManager) -> PostgresStore | None:
    """The PostgreSQL store when it is the backend and not in an outage."""
    return manager.pg if manager.pg is not None and not manager.fallback_active else None


def find_sessions(manager: SessionManager, query: str, limit: int, offset: int,
                  include_inactive: bool) -> dict[str, Any]:
    """One page of sessions, newest first: all of them, or those matching ``query``.

    ``has_more`` says whether another page follows; ``total`` is given without a query (with one,
    counting every match would cost a second search)."""
    limit, offset = check_paging(limit, offset)
    query = query.strip()
    if not query:
        rows = manager.list_sessions(limit=limit + 1, offset=offset, include_inactive=include_inactive)
        total = manager.count_sessions(include_inactive=include_inactive)
        return _page([(r, False) for r in rows], limit, offset, query, messages_searched=False, total=total)
    store = _postgres(manager)
    if store is not None:
        try:
            hits = browse.search(store, query, limit + 1, offset, include_inactive)
        except StoreUnavailable:
            pass  # the manager notices the outage on its next call; the local copies answer now
        else:
            return _page(hits, limit, offset, query, messages_searched=browse.text_query(query) is not None)
    needle = query.casefold()
    matches = [info for info in manager.files.list(2**31 - 1, 0, include_inactive) if _named(info, needle)]
    return _page([(m, False) for m in matches[offset:offset + limit + 1]], limit, offset, query,
                 messages_searched=False)


def _named(info: SessionInfo, needle: str) -> bool:
    meta = info["metadata"]
    return any(needle in str(value).casefold()
               for value in (info["session_id"], meta.get("name", ""), meta.get("user_id", "")))


def _page(rows: list[tuple[SessionInfo, bool]], limit: int, offset: int, query: str, *,
          messages_searched: bool, total: int | None = None) -> dict[str, Any]:
    sessions = [{**info, "matched_messages": matched} for info, matched in rows[:limit]]
    return {"sessions": sessions, "limit": limit, "offset": offset, "has_more": len(rows) > limit,
            "total": total, "query": query, "messages_searched": messages_searched}


def any_session(manager: SessionManager, session_id: str) -> StoredSession | SessionInfo | None:
    """The session whether active or not: the whole of it from PostgreSQL; from the file store an
    active session whole, an inactive one as its details only."""
    check_session_id(session_id)
    store = _postgres(manager)
    if store is not None:
        try:
            return browse.load_any(store, session_id)
        except StoreUnavailable:
            pass
    stored = manager.load(session_id)
    if stored is not None:
        return stored
    return manager.session_info(session_id, include_inactive=True)


def restore(manager: SessionManager, session_id: str) -> bool:
    """Undo a soft delete (an expiry already past is cleared); False when no session has this id."""
    check_session_id(session_id)
    if manager.pg is None:
        raise StoreUnavailable("restoring a deleted session needs the PostgreSQL store "
                               "(postgres_sessions: true); the file store cannot do it")
    store = _postgres(manager)
    if store is None:
        raise StoreUnavailable("PostgreSQL is unreachable; restore the session when it answers again")
    return browse.restore(store, session_id)


def overview(manager: SessionManager, rate: TurnRate) -> dict[str, Any]:
    """Statistics, store status, growth and cleanup figures, and the recent turn rate."""
    status = manager.status()
    out: dict[str, Any] = {
        "statistics": manager.get_session_statistics(),
        "store": {"backend": status["backend"], "fallback_active": status["fallback_active"],
                  "spool_depth": status["spool_depth"], "down_since": status["down_since"]},
        "turns": rate.snapshot(),
        "housekeeping": None,
    }
    store = _postgres(manager)
    if store is not None:
        with contextlib.suppress(StoreUnavailable):  # the store section says so; the rest still answers
            out["housekeeping"] = browse.housekeeping(store)
    return out


def _turns_total() -> float:
    """Every turn this process finished, whatever the outcome (``isotope_turns_total``)."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "isotope_turns":
            total += sum(s.value for s in metric.samples if s.name == "isotope_turns_total")
    return total


class TurnRate:
    """The recent turn rate, from the ``isotope_turns_total`` counter sampled on every read.

    Samples older than ``window_s`` are dropped (one is kept as the window's start), so the rate is
    over the last ``window_s`` seconds, or since this object was made when that is more recent."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, float]] = deque([(time.monotonic(), _turns_total())])

    def snapshot(self) -> dict[str, Any]:
        now, total = time.monotonic(), _turns_total()
        with self._lock:
            self._samples.append((now, total))
            while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
                self._samples.popleft()
            since, start = self._samples[0]
        span = max(now - since, 1e-9)
        return {"total": int(total), "window_s": round(span, 1), "in_window": int(total - start),
                "per_minute": round((total - start) * 60.0 / span, 2)}
