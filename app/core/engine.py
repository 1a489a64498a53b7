"""IsotopeEngine: the agent graph wrapped in durable, concurrent-safe sessions.

A turn (``resume_workflow``; the steps are in :mod:`app.core.turn`) locks the session, loads it,
runs the graph while streaming its events, saves, unlocks, and reports ``done``.

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
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool

from app.agent.events import Event, error_event
from app.agent.graph import SYSTEM_PROMPT, build_graph
from app.agent.models import make_model
from app.agent.session_state import empty_session_state, session_state
from app.agent.tools import default_tools
from app.config import Settings, load_settings
from app.core.postgres_session_manager import SessionManager
from app.core.turn import StateCache, Turns
from app.errors import EngineError, InvalidInput, SessionBusy, SessionNotFound

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
        self._cache: StateCache = StateCache(self.settings.store.cache_sessions)
        self.turns = Turns(self.manager, self.graph, self._cache, engine_cfg.max_steps)
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
        events = self.turn(user_input, session_id)
        if stream:
            return _reported(events, session_id)
        return _collect(events)

    def turn(self, user_input: str, session_id: str) -> Generator[Event, None, None]:
        """The turn's events, as :meth:`resume_workflow` checks and starts it, but a failure raised
        (:class:`SessionBusy`, :class:`EngineError`, the store's errors) instead of reported as an
        ``error`` event. SessionNotFound/InvalidInput are raised here, before any event."""
        if not isinstance(user_input, str) or not user_input.strip():
            raise InvalidInput("user_input", "must be a non-empty string")
        if self.manager.session_info(session_id) is None:  # also validates the id (InvalidInput)
            raise SessionNotFound(session_id)
        return self.turns.run(user_input, session_id)

    # -- restore -----------------------------------------------------------------------------

    def _restore_existing_sessions(self) -> dict[str, Any]:
        """The guide's name for :meth:`restore_sessions`."""
        return self.restore_sessions()

    def restore_sessions(self) -> dict[str, Any]:
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


def _reported(events: Iterator[Event], session_id: str) -> Iterator[Event]:
    """The guide's stream: a busy session or a failed model call ends it with an ``error`` event
    naming the failure (the model's exception class, for a model failure) instead of raising."""
    try:
        yield from events
    except SessionBusy as exc:
        yield error_event(session_id, type(exc).__name__, str(exc))
    except EngineError as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        yield error_event(session_id, type(cause).__name__, str(exc))


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


def _enable_info_logging() -> None:
    logger = logging.getLogger("isotope")
    logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


__all__: Sequence[str] = ["IsotopeEngine"]
