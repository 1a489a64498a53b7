"""LangGraph on Isotope: the same StateGraph and turn as ``langgraph``, with ``IsotopeSaver``.

Only the checkpointer differs from :mod:`bench.systems.langgraph_saver`, so the two rows compare
the savers. A thread is an Isotope session, so the listing goes through Isotope's own API
(``SessionManager.list_sessions``) on the same database.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from langgraph.graph import START, StateGraph

from bench.systems.base import Unavailable
from bench.systems.isotope_save import open_manager
from bench.systems.langgraph_saver import LangGraphSaver, State, timed


class LangGraphIsotope(LangGraphSaver):
    name = "langgraph_isotope"
    label = "LangGraph StateGraph + IsotopeSaver"
    listing_sql: ClassVar[str | None] = None
    listing_note = "Isotope list_sessions(limit=50) (a thread is a session)"

    def open(self, create_schema: bool = True) -> None:
        try:
            from app.adapters.langgraph import IsotopeSaver  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise Unavailable(f"app.adapters.langgraph is not importable ({exc})") from exc
        self._saver_cm = timed(IsotopeSaver).from_conn_string(self.url)
        self._saver = self._saver_cm.__enter__()
        self._persist = []
        self.persist_ms = self._persist
        self._data_dir = Path(tempfile.mkdtemp(prefix="isobench-lg-"))
        self._manager: Any = None
        self._pending = []
        builder = StateGraph(State)
        builder.add_node("reply", self._reply)
        builder.add_edge(START, "reply")
        self._graph = builder.compile(checkpointer=self._saver)

    def close(self) -> None:
        try:
            if self._manager is not None:
                self._manager.close()
            self._saver_cm.__exit__(None, None, None)
        finally:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def list_recent(self, limit: int) -> list[str]:
        if self._manager is None:
            self._manager = open_manager(self.url, self._data_dir)
        return [row["session_id"] for row in self._manager.list_sessions(limit=limit)]
