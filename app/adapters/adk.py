"""Isotope as a Google ADK session service: ``IsotopeSessionService(BaseSessionService)``.

The lines that change in an ADK app::

    from app.adapters.adk import IsotopeSessionService
    session_service = IsotopeSessionService.from_url(DB_URI)   # or IsotopeSessionService(): configured manager
    runner = Runner(agent=agent, app_name="my_app", session_service=session_service)

Each ADK session is an Isotope session (listed, expired, deleted, counted like any other): its
events are the Isotope session's ``messages`` (appended, never rewritten), its state a member.
App-scoped (``app:``) and user-scoped (``user:``) state live in one Isotope session per app and
per (app, user), which also index the app's users and each user's sessions. Ids are made of the
percent-encoded app, user and session names, so no name can collide with another. Every change
runs under the Isotope session's lock (shared by all processes on the database); ``temp:`` state
is never stored, as the base class prescribes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
from urllib.parse import quote

from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions import _session_util
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig, ListSessionsResponse
from google.adk.sessions.session import Session
from google.adk.sessions.state import State

from app.core.postgres_session_manager import SessionManager, get_session_manager

try:  # ADK >= 1.x names the error of a superseded session object; older ones raise ValueError
    from google.adk.errors._stale_session_error import StaleSessionError
except ImportError:  # pragma: no cover - depends on the installed ADK
    StaleSessionError = ValueError  # type: ignore[misc,assignment]

__all__ = ["IsotopeSessionService"]


def _part(name: str) -> str:
    return quote(name, safe="")


def _app_key(app: str) -> str:
    return f"adk/app/{_part(app)}"


def _user_key(app: str, user: str) -> str:
    return f"adk/user/{_part(app)}/{_part(user)}"


def _session_key(app: str, user: str, session_id: str) -> str:
    return f"adk/session/{_part(app)}/{_part(user)}/{_part(session_id)}"


def _event_json(event: Event) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(event.model_dump_json(exclude_none=True))
    return loaded


class IsotopeSessionService(BaseSessionService):
    """ADK sessions, events and scoped state in Isotope."""

    def __init__(self, manager: SessionManager | None = None, *, expires_in_hours: float | None = None) -> None:
        self.manager = manager if manager is not None else get_session_manager()
        self.expires_in_hours = expires_in_hours
        self._owns_manager = False

    @classmethod
    def from_url(cls, url: str, *, data_dir: str | None = None, **kwargs: Any) -> IsotopeSessionService:
        """A service on the PostgreSQL at ``url``, with a manager of its own (close() releases it)."""
        from app.config import load_settings  # noqa: PLC0415 - only this constructor needs it

        overrides: dict[str, Any] = {"database_url": url}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        manager = SessionManager(load_settings(environ={}, overrides=overrides), use_postgres=True, auto_open=True)
        service = cls(manager, **kwargs)
        service._owns_manager = True
        return service

    async def close(self) -> None:
        if self._owns_manager:
            await asyncio.to_thread(self.manager.close)

    # ------------------------------------------------------------------ BaseSessionService

    async def create_session(self, *, app_name: str, user_id: str, state: dict[str, Any] | None = None,
                             session_id: str | None = None) -> Session:
        return await asyncio.to_thread(self._create, app_name, user_id, state, session_id)

    async def get_session(self, *, app_name: str, user_id: str, session_id: str,
                          config: GetSessionConfig | None = None) -> Session | None:
        return await asyncio.to_thread(self._get, app_name, user_id, session_id, config)

    async def list_sessions(self, *, app_name: str, user_id: str | None = None) -> ListSessionsResponse:
        return await asyncio.to_thread(self._list, app_name, user_id)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        await asyncio.to_thread(self._delete, app_name, user_id, session_id)

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        record = await asyncio.to_thread(self.manager.load_session, _user_key(app_name, user_id))
        return dict((record or {}).get("state") or {})

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        stored = await asyncio.to_thread(self._append, session, event)
        if stored:
            session.last_update_time = event.timestamp
            return self._commit_event_to_session(session, event)
        return event

    # ------------------------------------------------------------------ storage (worker threads)

    def _save(self, key: str, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self.manager.save(key, data, metadata, self.expires_in_hours)

    def _update_scope(self, key: str, delta: dict[str, Any], index: str | None = None,
                      member: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        """Merge ``delta`` into the scope record ``key`` (and add ``member`` to its ``index``)."""
        if not delta and member is None:
            return
        with self.manager.lock(key):
            record = self.manager.load_session(key) or {"state": {}}
            changed = bool(delta)
            record.setdefault("state", {}).update(delta)
            if index is not None and member is not None:
                members = record.setdefault(index, [])
                if member not in members:
                    members.append(member)
                    changed = True
            if changed:
                self._save(key, record, metadata)

    def _create(self, app: str, user: str, state: dict[str, Any] | None, session_id: str | None) -> Session:
        session_id = (session_id.strip() if session_id else None) or str(uuid.uuid4())
        deltas = _session_util.extract_json_safe_state_delta(state or {})
        key = _session_key(app, user, session_id)
        now = time.time()
        with self.manager.lock(key):
            if self.manager.load_session(key) is not None:
                raise AlreadyExistsError(f"Session with id {session_id} already exists.")
            self._save(key, {"adk": {"app": app, "user": user, "id": session_id, "update_time": now},
                             "state": deltas["session"], "messages": []},
                       {"framework": "adk", "app_name": app, "user_id": user})
        self._update_scope(_app_key(app), deltas["app"], "users", user, {"framework": "adk", "app_name": app})
        self._update_scope(_user_key(app, user), deltas["user"], "sessions", session_id,
                           {"framework": "adk", "app_name": app, "user_id": user})
        return self._merged(app, user, Session(app_name=app, user_id=user, id=session_id,
                                               state=dict(deltas["session"]), last_update_time=now))

    def _get(self, app: str, user: str, session_id: str, config: GetSessionConfig | None) -> Session | None:
        session_id = session_id.strip() if session_id else session_id
        record = self.manager.load_session(_session_key(app, user, session_id))
        if record is None:
            return None
        events = [Event.model_validate_json(json.dumps(e)) for e in record.get("messages") or []]
        if config is not None:
            if config.num_recent_events is not None:
                events = events[-config.num_recent_events:] if config.num_recent_events else []
            if config.after_timestamp is not None:
                events = [e for e in events if e.timestamp >= config.after_timestamp]
        session = Session(app_name=app, user_id=user, id=session_id, state=dict(record.get("state") or {}),
                          events=events, last_update_time=record["adk"]["update_time"])
        return self._merged(app, user, session)

    def _merged(self, app: str, user: str, session: Session) -> Session:
        app_state = (self.manager.load_session(_app_key(app)) or {}).get("state") or {}
        user_state = (self.manager.load_session(_user_key(app, user)) or {}).get("state") or {}
        for key, value in app_state.items():
            session.state[State.APP_PREFIX + key] = value
        for key, value in user_state.items():
            session.state[State.USER_PREFIX + key] = value
        return session

    def _list(self, app: str, user: str | None) -> ListSessionsResponse:
        users = [user] if user is not None else (self.manager.load_session(_app_key(app)) or {}).get("users") or []
        sessions: list[Session] = []
        for uid in users:
            for sid in (self.manager.load_session(_user_key(app, uid)) or {}).get("sessions") or []:
                record = self.manager.load_session(_session_key(app, uid, sid))
                if record is not None:
                    sessions.append(self._merged(app, uid, Session(
                        app_name=app, user_id=uid, id=sid, state=dict(record.get("state") or {}),
                        last_update_time=record["adk"]["update_time"])))
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    def _delete(self, app: str, user: str, session_id: str) -> None:
        session_id = session_id.strip() if session_id else session_id
        user_key = _user_key(app, user)
        with self.manager.lock(user_key):
            record = self.manager.load_session(user_key)
            if record is not None and session_id in (record.get("sessions") or []):
                record["sessions"].remove(session_id)
                self._save(user_key, record)
        self.manager.delete_session(_session_key(app, user, session_id), soft_delete=False)

    def _append(self, session: Session, event: Event) -> bool:
        """Store ``event``; False when this very event is already stored (a retried append)."""
        key = _session_key(session.app_name, session.user_id, session.id)
        with self.manager.lock(key):
            record = self.manager.load_session(key)
            if record is None:
                raise SessionNotFoundError(f"Session {session.id} not found.")
            events = record.setdefault("messages", [])
            encoded = _event_json(event)
            if any(e.get("id") == event.id and e == encoded for e in events):
                return False
            if record["adk"]["update_time"] > session.last_update_time:
                raise StaleSessionError(
                    "The last_update_time provided in the session object is earlier than the update_time in "
                    "storage. Please check if it is a stale session.")
            deltas = _session_util.extract_json_safe_state_delta(
                event.actions.state_delta if event.actions and event.actions.state_delta else {})
            events.append(encoded)
            record.setdefault("state", {}).update(deltas["session"])
            record["adk"]["update_time"] = event.timestamp
            self._save(key, record)
        self._update_scope(_app_key(session.app_name), deltas["app"])
        self._update_scope(_user_key(session.app_name, session.user_id), deltas["user"])
        return True
