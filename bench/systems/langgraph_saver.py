"""LangGraph: a StateGraph whose ``messages`` channel uses ``add_messages``, on PostgresSaver.

The connection is opened the way the checkpointer's docs say (autocommit, prepare_threshold=0,
dict_row). A turn is ``graph.invoke`` with the human message; the single node returns the AI
message in place of an LLM, so the figure is LangGraph plus its checkpointer and nothing else.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

import psycopg
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
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


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _message(kind: str, text: str) -> AnyMessage:
    return HumanMessage(text) if kind == "human" else AIMessage(text)


class LangGraphSaver(System):
    name = "langgraph"
    label = "LangGraph StateGraph + PostgresSaver"
    listing_sql = LIST_THREADS
    listing_note = "no thread-listing API; emulated with saver.list(None, limit=L) + dedupe by thread_id"

    def open(self, create_schema: bool = True) -> None:
        self._conn = psycopg.connect(self.url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        self._saver = PostgresSaver(self._conn)
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
        self._graph.invoke(State(messages=[HumanMessage(human)]), _config(session_id))

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
