"""The engine's turn: lock the session, load it, run the graph, save it.

::

    lock(session)  ->  load (cached copy, reloaded if the stored version moved)
                   ->  run the graph, yielding token/tool_call/tool_result/message events
                   ->  save the full state (the store appends only the new messages)
    unlock         ->  yield done(session_id, version, message_count)

:meth:`Turns.run` raises what went wrong (:class:`~app.errors.SessionBusy` for a lock wait past
``store.lock_timeout_s``, :class:`~app.errors.EngineError` for a model or tool failure, the
store's errors) and saves nothing then: the stored session and the engine's cached copy stay as
they were. The engine's streamed guide API turns those exceptions into ``error`` events; the HTTP
API maps them to its error codes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from contextlib import ExitStack
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from app.agent.events import Event
from app.agent.run import GraphRun
from app.agent.session_state import extra_keys, session_state, to_session_data
from app.core.postgres_session_manager import SessionManager
from app.errors import EngineError, SessionNotFound, StoreUnavailable
from app.store.lru import BoundedLRU

log = logging.getLogger("isotope.engine")

# The engine's in-memory copies: session id -> (stored version, state).
StateCache = BoundedLRU[tuple[int, dict[str, Any]]]


class Turns:
    """Runs turns for one engine: its manager, its graph, its cache of session states."""

    def __init__(self, manager: SessionManager, graph: CompiledStateGraph[Any, Any, Any, Any], cache: StateCache,
                 max_steps: int) -> None:
        self.manager = manager
        self.graph = graph
        self.cache = cache
        self.max_steps = max_steps

    def run(self, user_input: str, session_id: str) -> Generator[Event, None, None]:
        """One turn's events, ending with ``done`` once the save returned and the lock is released."""
        clock = _Clock()
        with ExitStack() as held:
            held.enter_context(self.manager.lock(session_id))
            clock.lap("lock")
            version, state = self._load(session_id)
            clock.lap("load")
            run = GraphRun(self.graph, session_state(state), user_input, max_steps=self.max_steps)
            try:
                for event in run.events():
                    yield {**event, "session_id": session_id}
            except Exception as exc:
                log.info("turn failed session=%s version=%d: %s", session_id, version, type(exc).__name__)
                raise _failure(exc, session_id, version) from exc
            clock.lap("graph")
            assert run.state is not None
            data = to_session_data(run.state, extra_keys(state))
            result = self.manager.save(session_id, data)
            self.cache.put(session_id, (result.version, data))
            clock.lap("save")
        log.info(
            "turn session=%s version=%d->%d messages=%d appended=%d%s store=%s %s",
            session_id, version, result.version, result.message_count, result.appended,
            " rewritten" if result.rewritten else "", result.backend, clock,
        )  # fmt: skip
        # Only now, with the lock released and the save returned, is the turn reported done.
        yield {
            "type": "done",
            "session_id": session_id,
            "version": result.version,
            "message_count": result.message_count,
            "backend": result.backend,
        }

    def _load(self, session_id: str) -> tuple[int, dict[str, Any]]:
        """The session's state under the lock: the cached copy unless the stored version moved."""
        info = self.manager.session_info(session_id)
        if info is None:
            raise SessionNotFound(session_id, "deleted or expired while waiting for its lock")
        cached = self.cache.get(session_id)
        if cached is not None and cached[0] == info["version"]:
            return cached
        try:
            stored = self.manager.load(session_id)
        except StoreUnavailable:
            # PostgreSQL went down after it showed a newer version (another instance's turn) and
            # before this process could read it; there is no local copy of that version. Go on
            # from this process's own copy: the save is spooled as a delta on it, and the replay
            # appends it after the newer turns, so both sides are kept.
            if cached is None or not self.manager.fallback_active:
                raise
            log.warning("session %s: PostgreSQL is down and version %d was never read here; continuing from "
                        "this process's version %d (the replay merges both)", session_id, info["version"], cached[0])
            return cached
        if stored is None:
            raise SessionNotFound(session_id, "deleted or expired while waiting for its lock")
        log.info("reloaded session %s: version %s -> %d", session_id, cached and cached[0], stored.version)
        self.cache.put(session_id, (stored.version, stored.data))
        return stored.version, stored.data


def _failure(exc: Exception, session_id: str, version: int) -> EngineError:
    # Tool failures arrive as EngineError already; anything else came from the model call.
    what = str(exc) if isinstance(exc, EngineError) else f"the model failed ({type(exc).__name__}: {exc})"
    return EngineError(f"{what}; session {session_id!r} is unchanged at version {version}, send the message again")


class _Clock:
    """Milliseconds per phase of a turn, for the verbose log."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = (now - self.mark) * 1000
        self.mark = now

    def __str__(self) -> str:
        return " ".join(f"{name}={ms:.1f}ms" for name, ms in self.laps.items())
