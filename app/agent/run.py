"""One graph run: a user message through a compiled graph, seen as a stream of events.

This module knows nothing about storage: :class:`GraphRun` takes a state, and after its events
(:mod:`app.agent.events`) are exhausted :attr:`GraphRun.state` is the state to save. It never
mutates the state it was given. The engine's turn (:mod:`app.core.turn`) wraps a run in a
session lock, a load and a save.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from app.agent.events import Event, message_events, token_events


class GraphRun:
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
        """The run's events; model and tool exceptions propagate (the engine turns them into errors)."""
        config: RunnableConfig = {"recursion_limit": self.recursion_limit}
        final: dict[str, Any] = self.initial
        stream = self.graph.stream(self.initial, config, stream_mode=["messages", "updates", "values"])
        payload: Any
        for mode, payload in stream:
            if mode == "messages":
                yield from token_events(*payload)
            elif mode == "updates":
                for update in payload.values():
                    for message in (update or {}).get("messages", ()):
                        yield from message_events(message)
            else:
                final = payload
        self.state = final

    def new_messages(self) -> list[BaseMessage]:
        """The messages this run added, the user's first (after :meth:`events` is exhausted)."""
        assert self.state is not None, "iterate events() first"
        return list(self.state["messages"][len(self.initial["messages"]) - 1 :])
