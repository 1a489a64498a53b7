"""One user turn through a compiled graph, seen as a stream of plain event dicts.

Events (each a dict with ``"type"``)::

    {"type": "token", "content": " word"}                        model output as it streams
    {"type": "tool_call", "id", "name", "args"}                   the model asked for a tool
    {"type": "tool_result", "tool_call_id", "name", "content", "status"}   "success" or "error"
    {"type": "message", "role": "assistant", "content": "..."}    a complete assistant reply

The engine adds ``session_id`` to each and ends the stream with ``done`` or ``error``. This module
knows nothing about storage: it takes a state, and after the events are exhausted
:attr:`Turn.state` is the state to save. It never mutates the state it was given.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

Event = dict[str, Any]


class Turn:
    """Runs ``user_input`` against ``state``; iterate :meth:`events`, then read :attr:`state`."""

    def __init__(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        state: dict[str, Any],
        user_input: str,
        *,
        max_steps: int,
    ) -> None:
        self.graph = graph
        self.user_message = HumanMessage(content=user_input, id=str(uuid.uuid4()))
        self.initial = {**state, "messages": [*state["messages"], self.user_message], "steps": 0, "brief": ""}
        # Each model step is at most plan + agent + tools (three super-steps), plus stop/review.
        self.recursion_limit = 3 * max_steps + 5
        self.state: dict[str, Any] | None = None

    def events(self) -> Iterator[Event]:
        """The turn's events; model and tool exceptions propagate (the engine turns them into ``error``)."""
        config: RunnableConfig = {"recursion_limit": self.recursion_limit}
        final: dict[str, Any] = self.initial
        stream = self.graph.stream(self.initial, config, stream_mode=["messages", "updates", "values"])
        payload: Any
        for mode, payload in stream:
            if mode == "messages":
                yield from _token(*payload)
            elif mode == "updates":
                for update in payload.values():
                    for message in (update or {}).get("messages", ()):
                        yield from message_events(message)
            else:
                final = payload
        self.state = final

    def new_messages(self) -> list[BaseMessage]:
        """The messages this turn added, the user's first (after :meth:`events` is exhausted)."""
        assert self.state is not None, "iterate events() first"
        return list(self.state["messages"][len(self.initial["messages"]) - 1 :])


def _token(chunk: BaseMessage, metadata: dict[str, Any]) -> Iterator[Event]:
    # LangGraph's messages mode also replays whole messages from other nodes; tokens are the
    # model's chunks only.
    if isinstance(chunk, AIMessageChunk) and metadata.get("langgraph_node") == "agent" and chunk.text:
        yield {"type": "token", "content": chunk.text}


def message_events(message: BaseMessage) -> Iterator[Event]:
    """The events one new message stands for."""
    if isinstance(message, ToolMessage):
        yield {
            "type": "tool_result",
            "tool_call_id": message.tool_call_id,
            "name": message.name,
            "content": message.text,
            "status": message.status,
        }
    elif isinstance(message, AIMessage):
        for call in message.tool_calls:
            yield {"type": "tool_call", "id": call["id"], "name": call["name"], "args": call["args"]}
        if message.text:
            yield {"type": "message", "role": "assistant", "content": message.text}
