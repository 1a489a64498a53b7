"""The event: what a turn streams, one plain dict each, ``"type"`` saying which kind.

    {"type": "token", "content": " word"}                        model output as it streams
    {"type": "tool_call", "id", "name", "args"}                   the model asked for a tool
    {"type": "tool_result", "tool_call_id", "name", "content", "status"}   "success" or "error"
    {"type": "message", "role": "assistant", "content": "..."}    a complete assistant reply
    {"type": "done", "session_id", "version", "message_count", "backend"}  the turn was saved
    {"type": "error", "session_id", "error", "message", ...}      the turn ended without a save

The graph run (:mod:`app.agent.run`) produces the first four; the engine adds ``session_id`` to
each and ends the stream with ``done``; ``error`` is how a stream reports a failure to its reader
(the engine's streamed guide API and the HTTP API build it with :func:`error_event`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage

Event = dict[str, Any]


def error_event(session_id: str, error: str, message: str, **fields: Any) -> Event:
    """The ``error`` event: ``error`` names the failure's kind, ``message`` says what to do."""
    return {"type": "error", "session_id": session_id, "error": error, "message": message, **fields}


def token_events(chunk: BaseMessage, metadata: dict[str, Any]) -> Iterator[Event]:
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
