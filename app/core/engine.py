"""IsotopeEngine: the agent graph wrapped in durable, concurrent-safe sessions.

A turn (``resume_workflow``) is::

    lock(session)  ->  load (cached copy, reloaded if the stored version moved)
                   ->  run the graph, yielding token/tool_call/tool_result/message events
                   ->  save the full state (the store appends only the new messages)
    unlock         ->  yield done(session_id, version, message_count)

**Concurrency choice.** Every turn holds the session's exclusive lock (a PostgreSQL advisory lock,
so it spans processes and hosts sharing the database; a file lock while PostgreSQL is down) from
the load to the end of the save. A second instance resuming the same session waits for the first
turn to finish, then sees the stored version moved past its cached copy and reloads before running
its own turn. So every turn is stored exactly once, in lock order, and none is lost or interleaved.
The cost: turns on *one* session are serialised, including the model call (seconds for a hosted
model) — which is what a conversation means anyway; turns on different sessions never wait for
each other. The lock is taken when the stream is first iterated, not when ``resume_workflow``
is called, so an un-iterated stream holds nothing. Closing a stream early abandons the turn.

**Failure.** A model or tool exception ends the stream with an ``error`` event and saves nothing:
the stored session and this engine's cached copy are exactly as before the turn (so does a lock
wait longer than ``store.lock_timeout_s``: ``error`` with ``"error": "SessionBusy"``; with
``stream=False`` both are raised instead, as :class:`~app.errors.EngineError` and
:class:`~app.errors.SessionBusy`). An unknown,
deleted or expired session raises :class:`~app.errors.SessionNotFound` from ``resume_workflow``
itself, before any event, and nothing is created.

**Restore.** ``_restore_existing_sessions()`` runs at start-up (as the guide says): it asks the
manager to load every active session (from the file store when PostgreSQL is down), keeps them as
the engine's in-memory copies, reports failures and never aborts start-up.
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool

from app.agent.graph import SYSTEM_PROMPT, build_graph
from app.agent.models import make_model
from app.agent.state import empty_session_state, extra_keys, session_state, to_session_data
from app.agent.tools import default_tools
from app.agent.turn import Event, Turn
from app.config import Settings, load_settings
from app.core.lru import BoundedLRU
from app.core.postgres_session_manager import SessionManager
from app.errors import EngineError, InvalidInput, SessionBusy, SessionNotFound, StoreUnavailable

log = logging.getLogger("isotope.engine")

MAX_RESTORED = 10_000  # the manager's listing limit

# Short names the guide's ``config={...}`` uses, mapped to their settings keys. Other keys are
# dotted settings paths ("engine.openai.base_url", "data_dir", ...).
CONFIG_SHORTCUTS = {
    "postgres_sessions": "postgres_sessions",
    "enhanced_graph": "engine.enhanced_graph",
    "model": "engine.model",
    "max_steps": "engine.max_steps",
    "system_prompt": "engine.system_prompt",
}


class IsotopeEngine:
    """The conversational engine of the guide.

    ``config`` is a :class:`~app.config.Settings` or a dict of overrides (the guide's
    ``{"postgres_sessions": True, "enhanced_graph": True}``, or dotted settings keys).
    ``enable_postgres_sessions`` wins over the config's ``postgres_sessions``; off means the file
    store. Options: ``manager`` (a :class:`SessionManager` to share; the caller keeps owning it),
    ``model`` (a LangChain chat model instead of the configured one), ``tools`` (more tools),
    ``restore`` (``False`` skips the start-up restore).
    """

    def __init__(
        self,
        config: Settings | Mapping[str, Any] | None = None,
        enable_postgres_sessions: bool | None = None,
        verbose: bool = False,
        **options: Any,
    ) -> None:
        unknown = set(options) - {"manager", "model", "tools", "restore"}
        if unknown:
            raise InvalidInput(", ".join(sorted(unknown)), "unknown IsotopeEngine option")
        if verbose:
            _enable_info_logging()
        started = time.perf_counter()
        self.settings = _settings(config, enable_postgres_sessions)
        self.verbose = verbose
        self._owns_manager = options.get("manager") is None
        self.manager: SessionManager = options.get("manager") or SessionManager(
            self.settings, use_postgres=self.settings.postgres_sessions
        )
        engine_cfg = self.settings.engine
        model: BaseChatModel = options.get("model") or make_model(engine_cfg)
        tools: list[BaseTool] = [*default_tools(), *(options.get("tools") or ())]
        self.graph = build_graph(
            model,
            tools,
            enhanced=engine_cfg.enhanced_graph,
            max_steps=engine_cfg.max_steps,
            system_prompt=engine_cfg.system_prompt or SYSTEM_PROMPT,
        )
        # The engine's in-memory copies: session id -> (stored version, state).
        self._cache: BoundedLRU[tuple[int, dict[str, Any]]] = BoundedLRU(self.settings.store.cache_sessions)
        if self._owns_manager:
            self.manager.open()
            # The guide never closes its engines: close the pool when the engine is collected or
            # at interpreter exit, whichever comes first (close() runs it early).
            self._finalizer = weakref.finalize(self, self.manager.close)
        self.restore_result: dict[str, Any] = {}
        if options.get("restore", True):
            self.restore_result = self._restore_existing_sessions()
        log.info(
            "engine ready: store=%s graph=%s model=%s in %.0f ms",
            self._store_name(),
            "enhanced" if engine_cfg.enhanced_graph else "default",
            type(model).__name__,
            (time.perf_counter() - started) * 1000,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def _store_name(self) -> str:
        if self.manager.fallback_active:
            return f"{self.manager.backend} (unreachable: file store and outage spool)"
        return self.manager.backend

    def close(self) -> None:
        """Close the session manager if this engine opened it."""
        if self._owns_manager:
            self._finalizer()

    def __enter__(self) -> IsotopeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions ----------------------------------------------------------------------------

    def create_session(
        self,
        metadata: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        expires_in_hours: float | None = None,
    ) -> str:
        """Create a session; it is stored (version 1) before this returns. Returns its id."""
        session_id = session_id or uuid.uuid4().hex
        listing = dict(metadata or {})
        data = empty_session_state(listing)
        # The store's primary key decides whether the id is free (SessionExists, an InvalidInput).
        result = self.manager.create(session_id, data, metadata=listing, expires_in_hours=expires_in_hours)
        self._cache.put(session_id, (result.version, data))
        log.info("created session %s version=%d store=%s", session_id, result.version, result.backend)
        return session_id

    def get_session(self, session_id: str) -> dict[str, Any]:
        """The session's current state (messages, tasks, files, metadata); raises SessionNotFound."""
        stored = self.manager.load(session_id)
        if stored is None:
            raise SessionNotFound(session_id)
        return session_state(stored.data)

    def fork_session(self, session_id: str, new_session_id: str | None = None, at_message: int | None = None,
                     metadata: Mapping[str, Any] | None = None) -> str:
        """Copy a session (or its first ``at_message`` messages) to a new one and return its id; turns
        on either never touch the other (``SessionManager.fork_session``)."""
        new_id = self.manager.fork_session(session_id, new_session_id, at_message,
                                           dict(metadata) if metadata is not None else None)
        log.info("forked session %s -> %s", session_id, new_id)
        return new_id

    def list_sessions(self, limit: int = 10) -> list[dict[str, Any]]:
        """The most recently updated active sessions (the manager's listing items)."""
        return [dict(item) for item in self.manager.list_sessions(limit=limit, include_inactive=False)]

    # -- turns -------------------------------------------------------------------------------

    def resume_workflow(self, user_input: str, session_id: str, stream: bool = True) -> Any:
        """Run one user turn on a stored session.

        ``stream=True`` returns an iterator of event dicts ending with ``done`` (after the save) or
        ``error`` (nothing saved). ``stream=False`` runs the turn and returns one dict (``response``,
        ``events``, ``session_id``, ``version``, ``message_count``) or raises :class:`EngineError`.
        Raises :class:`SessionNotFound` at once, before any event, for an unknown, deleted or
        expired session.
        """
        if not isinstance(user_input, str) or not user_input.strip():
            raise InvalidInput("user_input", "must be a non-empty string")
        if self.manager.session_info(session_id) is None:  # also validates the id (InvalidInput)
            raise SessionNotFound(session_id)
        if stream:
            return self._turn(user_input, session_id, raise_errors=False)
        return _collect(self._turn(user_input, session_id, raise_errors=True))

    def _turn(self, user_input: str, session_id: str, *, raise_errors: bool) -> Iterator[Event]:
        clock = _Clock()
        with ExitStack() as held:
            try:
                held.enter_context(self.manager.lock(session_id))
            except SessionBusy as exc:
                if raise_errors:
                    raise
                yield _error_event(session_id, exc, str(exc))
                return
            clock.lap("lock")
            version, state = self._load_for_turn(session_id)
            clock.lap("load")
            max_steps = self.settings.engine.max_steps
            turn = Turn(self.graph, session_state(state), user_input, max_steps=max_steps)
            try:
                for event in turn.events():
                    yield {**event, "session_id": session_id}
            except Exception as exc:
                error = _failure(exc, session_id, version)
                log.info("turn failed session=%s version=%d: %s", session_id, version, type(exc).__name__)
                if raise_errors:
                    raise error from exc
                yield _error_event(session_id, exc, str(error))
                return
            clock.lap("graph")
            assert turn.state is not None
            data = to_session_data(turn.state, extra_keys(state))
            result = self.manager.save(session_id, data)
            self._cache.put(session_id, (result.version, data))
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

    def _load_for_turn(self, session_id: str) -> tuple[int, dict[str, Any]]:
        """The session's state under the lock: the cached copy unless the stored version moved."""
        info = self.manager.session_info(session_id)
        if info is None:
            raise SessionNotFound(session_id, "deleted or expired while waiting for its lock")
        cached = self._cache.get(session_id)
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
        self._cache.put(session_id, (stored.version, stored.data))
        return stored.version, stored.data

    # -- restore -----------------------------------------------------------------------------

    def _restore_existing_sessions(self) -> dict[str, Any]:
        """Load the active sessions into memory (newest first, up to ``store.cache_sessions``; the
        rest load on first use). Failures are counted and logged, never raised.

        Returns the manager's report (``restored_count``, ``failed_count``, ``failed_session_ids``,
        ``errors``, ``duration_s``, ``backend``) plus ``session_ids``, the restored ids newest first.
        """
        limit = min(self.settings.store.cache_sessions, MAX_RESTORED)
        try:
            # Versions are read *before* the data: a session saved in between is then cached with an
            # older version than its data, which costs one reload, never a stale turn.
            versions = {item["session_id"]: item["version"] for item in self.manager.list_sessions(limit=limit)}
            result = dict(self.manager.restore_all_sessions(limit=limit, include_data=True))
        except Exception as exc:  # start-up goes on whatever broke: turns load sessions on demand
            log.warning("session restore failed (%s: %s); sessions will load on first use", type(exc).__name__, exc)
            return {"restored_count": 0, "failed_count": 0, "failed_session_ids": [], "errors": [str(exc)]}
        sessions = result.pop("sessions", None) or {}
        # Oldest first, so the newest end up most recent in the cache.
        for session_id, data in reversed(list(sessions.items())):
            if session_id in versions:
                self._cache.put(session_id, (versions[session_id], data))
        result["session_ids"] = list(sessions)  # newest first, as the manager loaded them
        if result.get("failed_count"):
            log.warning(
                "restore: %d sessions could not be loaded: %s",
                result["failed_count"], ", ".join(result.get("failed_session_ids", [])[:10]),
            )  # fmt: skip
        log.info(
            "restored %d sessions from %s in %.0f ms",
            result.get("restored_count", 0), result.get("backend"), 1000 * result.get("duration_s", 0),
        )  # fmt: skip
        return result


def _settings(config: Settings | Mapping[str, Any] | None, enable_postgres: bool | None) -> Settings:
    if isinstance(config, Settings):
        if enable_postgres is None:
            return config
        return config.model_copy(update={"postgres_sessions": enable_postgres})
    overrides = {CONFIG_SHORTCUTS.get(key, key): value for key, value in (config or {}).items()}
    if enable_postgres is not None:
        overrides["postgres_sessions"] = enable_postgres
    return load_settings(overrides=overrides)


def _error_event(session_id: str, exc: BaseException, message: str) -> Event:
    return {"type": "error", "session_id": session_id, "error": type(exc).__name__, "message": message}


def _failure(exc: Exception, session_id: str, version: int) -> EngineError:
    # Tool failures arrive as EngineError already; anything else came from the model call.
    what = str(exc) if isinstance(exc, EngineError) else f"the model failed ({type(exc).__name__}: {exc})"
    return EngineError(f"{what}; session {session_id!r} is unchanged at version {version}, send the message again")


def _collect(events: Iterator[Event]) -> dict[str, Any]:
    kept = [e for e in events if e["type"] != "token"]
    done = kept[-1]
    replies = [e["content"] for e in kept if e["type"] == "message"]
    return {
        "session_id": done["session_id"],
        "version": done["version"],
        "message_count": done["message_count"],
        "response": replies[-1] if replies else "",
        "events": kept,
    }


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


def _enable_info_logging() -> None:
    logger = logging.getLogger("isotope")
    logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


__all__: Sequence[str] = ["IsotopeEngine"]
