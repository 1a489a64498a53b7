"""The physical floor: one multi-row INSERT per turn into an append-only table, autocommit.

Nothing can persist two messages durably with less work than one statement and one commit,
so every other system is reported as a ratio to this one. The payload is the compact JSON
Isotope stores for a LangChain message, so the bytes per message are comparable.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.corpus import Message
from bench.systems.base import System

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS floor_messages (
    session_id text NOT NULL,
    seq int NOT NULL,
    message jsonb NOT NULL,
    PRIMARY KEY (session_id, seq)
)
"""
INSERT_TWO = "INSERT INTO floor_messages (session_id, seq, message) VALUES (%s, %s, %s), (%s, %s, %s)"
INSERT_ONE = "INSERT INTO floor_messages (session_id, seq, message) VALUES (%s, %s, %s)"
SELECT_SESSION = "SELECT message FROM floor_messages WHERE session_id = %s ORDER BY seq"
SELECT_LENGTH = "SELECT coalesce(max(seq) + 1, 0) FROM floor_messages WHERE session_id = %s"


def _payload(kind: str, text: str) -> Jsonb:
    return Jsonb({"$iso": "msg", "type": kind, "content": text}, dumps=_compact)


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Floor(System):
    name = "floor"
    label = "Physical floor (append-only 2-row INSERT)"
    listing_note = "not supported (no per-session row, no timestamp)"

    def open(self, create_schema: bool = True) -> None:
        self._conn = psycopg.connect(self.url, autocommit=True)
        # The app always knows how long its conversation is; so does this adapter.
        self._next_seq: dict[str, int] = {}
        if create_schema:
            self._conn.execute(CREATE_TABLE)

    def close(self) -> None:
        self._conn.close()

    def create(self, session_id: str, messages: list[Message]) -> None:
        rows = [(session_id, seq, _payload(k, t)) for seq, (k, t) in enumerate(messages)]
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(INSERT_ONE, rows)
        self._next_seq[session_id] = len(messages)

    def resume(self, session_id: str, history: int) -> None:
        row = self._conn.execute(SELECT_LENGTH, (session_id,)).fetchone()
        self._next_seq[session_id] = row[0] if row else 0

    def turn(self, session_id: str, human: str, ai: str) -> None:
        seq = self._next_seq[session_id]
        self._conn.execute(
            INSERT_TWO,
            (session_id, seq, _payload("human", human), session_id, seq + 1, _payload("ai", ai)),
        )
        self._next_seq[session_id] = seq + 2

    def load(self, session_id: str) -> list[dict[str, Any]]:
        return [row[0] for row in self._conn.execute(SELECT_SESSION, (session_id,))]

    def summarize(self, loaded: list[dict[str, Any]]) -> tuple[int, str]:
        return len(loaded), loaded[-1]["content"] if loaded else ""
