"""OpenAI Agents SDK: ``SQLAlchemySession`` on a SQLAlchemy async engine with asyncpg.

The SDK is async; this adapter drives its own event loop, the way a synchronous app would.
One session object per conversation is kept and reused: SQLAlchemy caches compiled statements
per session object, so rebuilding objects per request would cost more than measured here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.corpus import Message
from bench.systems.base import System

# No listing API on the Session protocol; agent_sessions has updated_at but no index on it.
LIST_SESSIONS = "SELECT session_id FROM agent_sessions ORDER BY updated_at DESC LIMIT %s"


def asyncpg_url(conninfo: str) -> URL:
    """The SQLAlchemy URL of a libpq URL or conninfo (a unix-socket directory stays a host)."""
    params = {key: str(value) for key, value in conninfo_to_dict(conninfo).items() if value is not None}
    port = params.get("port")
    return URL.create(
        "postgresql+asyncpg",
        username=params.get("user"),
        password=params.get("password") or None,
        host=params.get("host"),
        port=int(port) if port else None,
        database=params.get("dbname"),
    )


def _item(kind: str, text: str) -> Any:  # an EasyInputMessageParam
    return {"role": "user" if kind == "human" else "assistant", "content": text}


class AgentsSdk(System):
    name = "agents_sdk"
    label = "OpenAI Agents SDK SQLAlchemySession (asyncpg)"
    listing_sql = LIST_SESSIONS
    listing_note = "no listing API; ad-hoc ORDER BY updated_at DESC over agent_sessions (no index)"

    def open(self, create_schema: bool = True) -> None:
        self._loop = asyncio.new_event_loop()
        self._engine: AsyncEngine = create_async_engine(asyncpg_url(self.url))
        self._sessions: dict[str, SQLAlchemySession] = {}
        if create_schema:
            # The first session object with create_tables=True creates both tables.
            probe = SQLAlchemySession("bench-schema", engine=self._engine, create_tables=True)
            self._run(probe.get_items())

    def close(self) -> None:
        self._run(self._engine.dispose())
        self._loop.close()

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def _session(self, session_id: str) -> SQLAlchemySession:
        session = self._sessions.get(session_id)
        if session is None:
            session = SQLAlchemySession(session_id, engine=self._engine)
            self._sessions[session_id] = session
        return session

    def create(self, session_id: str, messages: list[Message]) -> None:
        # Seeding builds a throwaway object: caching 10,000 of them would only cost memory.
        session = SQLAlchemySession(session_id, engine=self._engine)
        self._run(session.add_items([_item(k, t) for k, t in messages]))

    def turn(self, session_id: str, human: str, ai: str) -> None:
        self._run(self._session(session_id).add_items([_item("human", human), _item("ai", ai)]))

    def load(self, session_id: str) -> Any:
        return self._run(self._session(session_id).get_items())

    def summarize(self, loaded: list[Any]) -> tuple[int, str]:
        return len(loaded), str(loaded[-1]["content"]) if loaded else ""
