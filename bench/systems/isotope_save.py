"""Isotope's session manager: ``save_session`` with the FULL state after every turn.

This is how the guide's app persists: it holds the whole session dict in memory, appends the
turn's two LangChain messages and hands the whole state back. Whatever Isotope does to avoid
rewriting unchanged history happens inside ``save_session``; the call here is the plain API.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from bench.corpus import Message
from bench.systems.base import System, Unavailable


def _message(kind: str, text: str) -> BaseMessage:
    return HumanMessage(text) if kind == "human" else AIMessage(text)


def new_state(messages: list[BaseMessage]) -> dict[str, Any]:
    return {"messages": messages, "tasks": [], "files": {}, "metadata": {}}


def bench_settings(url: str, data_dir: Path, overrides: dict[str, Any] | None = None) -> Any:
    """Settings for ``url`` that ignore any local config file and ISOTOPE_* variables."""
    try:
        from app.config import load_settings  # noqa: PLC0415 - optional until the app lands
    except ImportError as exc:
        raise Unavailable(f"app.config is not importable yet ({exc})") from exc
    config = data_dir / "bench-config.yaml"
    config.write_text("{}\n", encoding="utf-8")
    values = {"database_url": url, "data_dir": str(data_dir), **(overrides or {})}
    return load_settings(path=config, environ={}, overrides=values)


def open_manager(url: str, data_dir: Path) -> Any:
    """An opened ``SessionManager`` on ``url``."""
    try:
        from app.core.postgres_session_manager import SessionManager  # noqa: PLC0415
    except ImportError as exc:
        raise Unavailable(f"app.core.postgres_session_manager is not importable yet ({exc})") from exc
    manager = SessionManager(bench_settings(url, data_dir), use_postgres=True)
    manager.open()
    return manager


class IsotopeSave(System):
    name = "isotope_save"
    label = "Isotope save_session (full state each turn)"
    listing_note = "list_sessions(limit=50)"

    def open(self, create_schema: bool = True) -> None:
        self._data_dir = Path(tempfile.mkdtemp(prefix="isobench-data-"))
        self._states: dict[str, dict[str, Any]] = {}
        self._manager = open_manager(self.url, self._data_dir)

    def close(self) -> None:
        try:
            self._manager.close()
        finally:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def create(self, session_id: str, messages: list[Message]) -> None:
        state = new_state([_message(k, t) for k, t in messages])
        self._save(session_id, state)
        self._states[session_id] = state

    def resume(self, session_id: str, history: int) -> None:
        loaded = self._manager.load_session(session_id)
        if loaded is None:
            raise KeyError(session_id)
        self._states[session_id] = loaded

    def turn(self, session_id: str, human: str, ai: str) -> None:
        state = self._states[session_id]
        state["messages"].extend((HumanMessage(human), AIMessage(ai)))
        self._save(session_id, state)

    def _save(self, session_id: str, state: dict[str, Any]) -> None:
        if not self._manager.save_session(session_id, state) or self._manager.fallback_active:
            # A save that went to the outage spool measured the local disk, not PostgreSQL.
            raise RuntimeError(f"save_session({session_id!r}) did not reach PostgreSQL")

    def load(self, session_id: str) -> Any:
        return self._manager.load_session(session_id)

    def summarize(self, loaded: Any) -> tuple[int, str]:
        messages = (loaded or {}).get("messages", [])
        return len(messages), str(messages[-1].content) if messages else ""

    def list_recent(self, limit: int) -> list[str] | None:
        return [row["session_id"] for row in self._manager.list_sessions(limit=limit)]
