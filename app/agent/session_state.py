"""The agent's state: what a session holds, plus the scratch values of one turn.

A session's stored state is exactly four keys (the guide's shape)::

    {"messages": [...LangChain messages...], "tasks": [{"id", "title", "done"}], "files": {name: text},
     "metadata": {...}}

The graph state adds two transient keys (``steps``, ``brief``) that live for one turn and are never
saved. ``messages`` uses :func:`append_messages`, not LangGraph's ``add_messages``: a turn only ever
appends, and ``add_messages`` would stamp ids onto *existing* history objects in place (mutating the
engine's cached copy and making the store see a rewritten history instead of an append).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage, BaseMessage, convert_to_messages

SESSION_KEYS = ("messages", "tasks", "files", "metadata")


def append_messages(left: Sequence[Any] | None, right: Sequence[Any] | Any) -> list[BaseMessage]:
    """Reducer: history plus the new messages, never touching the history's objects."""
    if not isinstance(right, list | tuple):
        right = [right]
    if not left:
        # The turn's first update carries the whole history: already messages, nothing to convert.
        return list(right) if all(isinstance(m, BaseMessage) for m in right) else convert_to_messages(right)
    return [*left, *convert_to_messages(right)]


class AgentState(TypedDict, total=False):
    """What flows through the graph during a turn."""

    messages: Annotated[list[AnyMessage], append_messages]
    tasks: list[dict[str, Any]]
    files: dict[str, str]
    metadata: dict[str, Any]
    steps: int  # model calls made this turn (transient)
    brief: str  # the enhanced graph's plan for the next model call (transient)


def empty_session_state(metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The state a new session starts with."""
    return {"messages": [], "tasks": [], "files": {}, "metadata": dict(metadata or {})}


def session_state(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Normalise stored data to the four session keys (older or hand-written sessions may lack some).

    Messages are shared, not copied: LangChain messages are treated as immutable here, so a
    1,000-message history costs a list copy, not 1,000 object copies. Tasks, files and metadata are
    deep-copied because tools edit them.
    """
    data = data or {}
    messages = convert_to_messages(list(data.get("messages") or []))
    return {
        "messages": messages,
        "tasks": copy.deepcopy(list(data.get("tasks") or [])),
        "files": dict(data.get("files") or {}),
        "metadata": copy.deepcopy(dict(data.get("metadata") or {})),
    }


def to_session_data(state: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What is saved: ``extra`` (keys of the stored session the engine does not know, kept as they
    were) overlaid with the four session keys of ``state``; the transient keys are dropped."""
    data = dict(extra or {})
    data["messages"] = list(state.get("messages") or [])
    data["tasks"] = list(state.get("tasks") or [])
    data["files"] = dict(state.get("files") or {})
    data["metadata"] = dict(state.get("metadata") or {})
    return data


def extra_keys(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored keys outside the four the engine manages (kept verbatim on every save)."""
    return {k: v for k, v in (data or {}).items() if k not in SESSION_KEYS}
