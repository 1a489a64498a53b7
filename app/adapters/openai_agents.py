"""Isotope as an OpenAI Agents SDK session: ``IsotopeSession`` implements the SDK's ``Session``.

The lines that change in an Agents SDK app::

    from app.adapters.openai_agents import IsotopeSession
    session = IsotopeSession.from_url("user-42", url=DB_URI)      # or IsotopeSession("user-42")
    result = await Runner.run(agent, "Hello", session=session)

An SDK session is an Isotope session whose ``messages`` are the SDK's input items (plain JSON
dicts), so it is listed, expired, deleted and counted like any other, and a save writes only the
new items (Isotope's append-only store). Every change runs under the session's lock (a
PostgreSQL advisory lock, shared by every process on the database) and starts from the stored
version, so several processes adding to one session never lose each other's items. Without a
URL the session uses the configured manager (``get_session_manager()``), PostgreSQL or files.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from agents.memory.session_settings import SessionSettings, resolve_session_limit

from app.core.postgres_session_manager import SessionManager, get_session_manager
from app.store.base import check_session_id

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["IsotopeSession"]

ITEMS = "messages"


class IsotopeSession:
    """One conversation of the Agents SDK, stored as the Isotope session ``session_id``."""

    session_settings: SessionSettings | None = None

    def __init__(self, session_id: str, manager: SessionManager | None = None, *,
                 session_settings: SessionSettings | None = None, expires_in_hours: float | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self.session_id = check_session_id(session_id)
        self.manager = manager if manager is not None else get_session_manager()
        self.session_settings = session_settings
        self.expires_in_hours = expires_in_hours
        self.metadata = metadata
        self._owns_manager = False
        # What this object last read or wrote, and at which stored version: a change that finds
        # the same version under the lock appends without reading the history back.
        self._items: list[Any] | None = None
        self._version: int | None = None
        self._mutex = threading.Lock()

    @classmethod
    def from_url(cls, session_id: str, *, url: str, data_dir: str | None = None, **kwargs: Any) -> IsotopeSession:
        """A session on the PostgreSQL at ``url``, with a manager of its own (close() releases it).

        ``data_dir`` holds the manager's outage spool (default: the configured one, ``./data``).
        """
        from app.config import load_settings  # noqa: PLC0415 - only this constructor needs it

        overrides: dict[str, Any] = {"database_url": url}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        settings = load_settings(environ={}, overrides=overrides)
        manager = SessionManager(settings, use_postgres=True, auto_open=True)
        session = cls(session_id, manager, **kwargs)
        session._owns_manager = True
        return session

    def close(self) -> None:
        if self._owns_manager:
            self.manager.close()

    # ------------------------------------------------------------------ the Session protocol

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The history, oldest first; with a limit, only the latest ``limit`` items."""
        items = await asyncio.to_thread(self._read)
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is None:
            return items
        return items[-wanted:] if wanted > 0 else []

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        if items:
            new = list(items)
            await asyncio.to_thread(self._change, lambda stored: (stored + new, None))

    async def pop_item(self) -> TResponseInputItem | None:
        def pop(stored: list[Any]) -> tuple[list[Any] | None, Any]:
            return (stored[:-1], stored[-1]) if stored else (None, None)

        popped: TResponseInputItem | None = await asyncio.to_thread(self._change, pop)
        return popped

    async def clear_session(self) -> None:
        await asyncio.to_thread(self._clear)

    # ------------------------------------------------------------------ under the lock

    def _read(self) -> list[Any]:
        data = self.manager.load_session(self.session_id)
        items = list((data or {}).get(ITEMS) or [])
        return items

    def _change(self, change: Any) -> Any:
        """Apply ``change(stored) -> (new items or None, result)`` atomically; return result."""
        with self._mutex, self.manager.lock(self.session_id):
            stored = self._current()
            items, result = change(stored)
            if items is not None:
                saved = self.manager.save(self.session_id, {ITEMS: items}, self.metadata, self.expires_in_hours)
                self._items, self._version = items, saved.version
            return result

    def _current(self) -> list[Any]:
        info = self.manager.session_info(self.session_id)
        if info is None:
            return []
        if self._items is not None and info["version"] == self._version:
            return list(self._items)
        return self._read()

    def _clear(self) -> None:
        with self._mutex, self.manager.lock(self.session_id):
            self.manager.delete_session(self.session_id, soft_delete=False)
            self._items, self._version = None, None
