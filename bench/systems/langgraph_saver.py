"""LangGraph: a StateGraph whose ``messages`` channel uses ``add_messages``, on PostgresSaver.

The connection is opened the way the checkpointer's docs say (autocommit, prepare_threshold=0,
dict_row). A turn is ``graph.invoke`` with the human message; the single node returns the AI
message in place of an LLM, so the figure is LangGraph plus its checkpointer and nothing else.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any, ClassVar, TypedDict, TypeVar

import psycopg
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from psycopg.rows import dict_row

from bench.corpus import Message
from bench.systems.base import System

# No thread-listing API exists in the OSS checkpointer; this is what an app would write by hand.
LIST_THREADS = """
SELECT thread_id FROM checkpoints WHERE checkpoint_ns = ''
GROUP BY thread_id ORDER BY max(checkpoint_id) DESC LIMIT %s
"""


S = TypeVar("S", bound=BaseCheckpointSaver[Any])


def timed(base: type[S]) -> type[S]:
    """``base`` that adds up the time spent in get_tuple, put and put_writes (``spent``, seconds)."""

    class Timed(base):  # type: ignore[valid-type,misc]
        spent = 0.0
        _spent_lock = threading.Lock()

        def _add(self, started: float) -> None:
            with self._spent_lock:
                self.spent += time.perf_counter() - started

        def get_tuple(self, config: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().get_tuple(config)
            finally:
                self._add(started)

        def put(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().put(*args, **kwargs)
            finally:
                self._add(started)

        def put_writes(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().put_writes(*args, **kwargs)
            finally:
                self._add(started)

    Timed.__name__ = f"Timed{base.__name__}"
    return Timed


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _message(kind: str, text: str) -> AnyMessage:
    return HumanMessage(text) if kind == "human" else AIMessage(text)


class LangGraphSaver(System):
    name = "langgraph"
    label = "LangGraph StateGraph + PostgresSaver"
    listing_sql: ClassVar[str | None] = LIST_THREADS
    listing_note = "no thread-listing API; emulated with saver.list(None, limit=L) + dedupe by thread_id"

    def open(self, create_schema: bool = True) -> None:
        self._conn = psycopg.connect(self.url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        self._saver: Any = timed(PostgresSaver)(self._conn)
        self._persist: list[float] = []
        self.persist_ms = self._persist
        if create_schema:
            self._saver.setup()
        # The node stands in for the LLM: it returns the reply the harness queued for this turn.
        # Passing it through config["configurable"] would copy it into checkpoint metadata.
        self._pending: list[BaseMessage] = []
        builder = StateGraph(State)
        builder.add_node("reply", self._reply)
        builder.add_edge(START, "reply")
        self._graph = builder.compile(checkpointer=self._saver)
        self._list_fetch = 64

    def close(self) -> None:
        self._conn.close()

    def _reply(self, state: State) -> dict[str, Any]:
        reply, self._pending = self._pending, []
        return {"messages": reply}

    def create(self, session_id: str, messages: list[Message]) -> None:
        msgs = [_message(k, t) for k, t in messages]
        if msgs and isinstance(msgs[-1], AIMessage):
            self._pending = [msgs.pop()]
        self._graph.invoke(State(messages=msgs), _config(session_id))

    def turn(self, session_id: str, human: str, ai: str) -> None:
        self._pending = [AIMessage(ai)]
        self._saver.spent = 0.0
        self._graph.invoke(State(messages=[HumanMessage(human)]), _config(session_id))
        self._persist.append(self._saver.spent * 1000.0)

    def load(self, session_id: str) -> Any:
        return self._graph.get_state(_config(session_id)).values.get("messages", [])

    def summarize(self, loaded: list[BaseMessage]) -> tuple[int, str]:
        return len(loaded), str(loaded[-1].content) if loaded else ""

    def list_recent(self, limit: int) -> list[str]:
        # saver.list(None) returns checkpoints of all threads newest first, each with its blobs;
        # fetch L of them and grow L until they cover `limit` distinct threads.
        while True:
            threads: list[str] = []
            fetched = 0
            for item in self._saver.list(None, limit=self._list_fetch):
                fetched += 1
                thread = item.config["configurable"]["thread_id"]
                if thread not in threads:
                    threads.append(thread)
            if len(threads) >= limit or fetched < self._list_fetch:
                self.listing_note = f"{type(self).listing_note} [L={self._list_fetch}]"
                return threads[:limit]
            self._list_fetch *= 2


def _config(session_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": session_id}}
