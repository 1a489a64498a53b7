"""langchain-postgres: ``PostgresChatMessageHistory`` on one sync psycopg connection.

The connection is left as the library expects it (not autocommit): ``add_messages`` commits
itself, while ``get_messages`` never does, so after a load the connection sits idle in
transaction until the next write. That is the library's behaviour and is measured as is.
"""

from __future__ import annotations

import psycopg
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_postgres import PostgresChatMessageHistory

from bench.corpus import Message
from bench.systems.base import System

TABLE = "lc_chat_history"
# No listing API and no sessions table: group the message table by session.
LIST_SESSIONS = """
SELECT session_id::text FROM lc_chat_history
GROUP BY session_id ORDER BY max(id) DESC LIMIT %s
"""


def _message(kind: str, text: str) -> BaseMessage:
    return HumanMessage(text) if kind == "human" else AIMessage(text)


class LangchainPostgres(System):
    name = "langchain_postgres"
    label = "langchain-postgres PostgresChatMessageHistory"
    listing_sql = LIST_SESSIONS
    listing_note = "no listing API; ad-hoc GROUP BY session_id over the message table (no sessions table)"

    def open(self, create_schema: bool = True) -> None:
        self._conn = psycopg.connect(self.url)
        if create_schema:
            PostgresChatMessageHistory.create_tables(self._conn, TABLE)
        self._histories: dict[str, PostgresChatMessageHistory] = {}

    def close(self) -> None:
        self._conn.close()

    def _history(self, session_id: str) -> PostgresChatMessageHistory:
        history = self._histories.get(session_id)
        if history is None:
            history = PostgresChatMessageHistory(TABLE, session_id, sync_connection=self._conn)
            self._histories[session_id] = history
        return history

    def create(self, session_id: str, messages: list[Message]) -> None:
        self._history(session_id).add_messages([_message(k, t) for k, t in messages])

    def turn(self, session_id: str, human: str, ai: str) -> None:
        self._history(session_id).add_messages([HumanMessage(human), AIMessage(ai)])

    def load(self, session_id: str) -> list[BaseMessage]:
        return self._history(session_id).get_messages()

    def summarize(self, loaded: list[BaseMessage]) -> tuple[int, str]:
        return len(loaded), str(loaded[-1].content) if loaded else ""
