"""The offline model: a deterministic LangChain chat model that needs no network, so a fresh clone chats.

It is a real :class:`~langchain_core.language_models.BaseChatModel`: ``bind_tools`` binds the session
tools (OpenAI tool schemas, as for any provider), ``invoke`` returns an ``AIMessage`` and ``stream``
yields word tokens, so the graph, the engine and the CLI run exactly as they do with a hosted model.

What it understands (one command per line, case-insensitive; the lines after ``save file`` that are
not commands belong to the file)::

    add task: TEXT         -> add_task(title=TEXT)
    complete task N        -> complete_task(task_id=N)
    list tasks             -> list_tasks()
    save file NAME: TEXT   -> save_file(name=NAME, content=TEXT)
    read file NAME         -> read_file(name=NAME)
    list files             -> list_files()

A message with commands becomes one ``AIMessage`` carrying a tool call per command; once the tool
messages are in, it replies with their results. Anything else gets a short reply that proves it read
the history: the turn number (the count of human messages) and the previous thing the user said.
When the enhanced graph passes a workspace brief (a system message starting with
:data:`BRIEF_HEADER`), replies end with its "Focus:" line, the way a real model would use the plan.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool

BRIEF_HEADER = "Workspace brief"
QUOTE_CHARS = 60

_COMMANDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("add_task", re.compile(r"^\s*add task\s*:\s*(?P<title>.+?)\s*$", re.I)),
    ("complete_task", re.compile(r"^\s*(?:complete|finish|done) task\s*#?(?P<task_id>\d+)\s*$", re.I)),
    ("list_tasks", re.compile(r"^\s*(?:list|show) tasks\s*$", re.I)),
    ("save_file", re.compile(r"^\s*save file\s+(?P<name>[^:]+?)\s*:\s?(?P<content>.*)$", re.I)),
    ("read_file", re.compile(r"^\s*(?:read|show) file\s+(?P<name>.+?)\s*$", re.I)),
    ("list_files", re.compile(r"^\s*(?:list|show) files\s*$", re.I)),
)


@dataclass
class _Command:
    name: str
    args: dict[str, Any]


def parse_commands(text: str) -> list[_Command]:
    """The tool commands in a user message, in order (empty when it is just conversation)."""
    commands: list[_Command] = []
    for line in text.splitlines():
        command = _match(line)
        if command is not None:
            commands.append(command)
        elif commands and commands[-1].name == "save_file":
            # A line that is not a command continues the file being saved.
            commands[-1].args["content"] += "\n" + line
    return commands


def _match(line: str) -> _Command | None:
    for name, pattern in _COMMANDS:
        found = pattern.match(line)
        if found:
            args: dict[str, Any] = dict(found.groupdict())
            if "task_id" in args:
                args["task_id"] = int(args["task_id"])
            return _Command(name, args)
    return None


class OfflineChatModel(BaseChatModel):
    """Deterministic, network-free chat model with tool calling and token streaming."""

    model_name: str = "isotope-offline"

    @property
    def _llm_type(self) -> str:
        return "isotope-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools the way hosted models do: as OpenAI tool schemas passed with every call."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages, kwargs.get("tools")))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self.respond(messages, kwargs.get("tools"))
        for token in re.findall(r"\s*\S+", str(reply.content)):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk
        if reply.tool_calls:
            # Tool calls stream as chunks with JSON-string arguments, as OpenAI sends them.
            tool_chunks = [
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                for i, c in enumerate(reply.tool_calls)
            ]
            chunk = ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=tool_chunks))
            if run_manager:
                run_manager.on_llm_new_token("", chunk=chunk)
            yield chunk

    def respond(self, messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] | None) -> AIMessage:
        """The whole reply to this conversation: deterministic in ``messages`` and ``tools``."""
        bound = {t["function"]["name"] for t in tools or ()}
        brief = _brief(messages)
        last = messages[-1] if messages else None
        if isinstance(last, ToolMessage):
            return AIMessage(content=_with_focus(_summarise_tools(messages), brief))
        turn = sum(isinstance(m, HumanMessage) for m in messages)
        text = last.text if isinstance(last, HumanMessage) else ""
        commands = parse_commands(text)
        if commands:
            missing = sorted({c.name for c in commands} - bound)
            if missing:
                names = ", ".join(missing)
                return AIMessage(content=f"I can't do that here: the {names} tool is not available.")
            calls = [
                ToolCall(name=c.name, args=c.args, id=f"call_{turn}_{i}", type="tool_call")
                for i, c in enumerate(commands, start=1)
            ]
            return AIMessage(content="", tool_calls=calls)
        return AIMessage(content=_with_focus(_chat_reply(messages, turn, text), brief))


def _chat_reply(messages: Sequence[BaseMessage], turn: int, text: str) -> str:
    if turn <= 1:
        return (
            f"Turn 1: hello! You said {_quote(text)}. I am the offline model; try "
            "'add task: ...', 'list tasks', 'save file NAME: ...' or 'list files'."
        )
    # The previous human message is near the end; scan backwards from the current one.
    previous = next(m.text for m in reversed(messages[:-1]) if isinstance(m, HumanMessage))
    prompts = next((i for i, m in enumerate(messages) if not isinstance(m, SystemMessage)), len(messages))
    earlier = len(messages) - prompts - 1
    return f"Turn {turn}: you said {_quote(text)}; before that, {_quote(previous)}. ({earlier} earlier messages)"


def _summarise_tools(messages: Sequence[BaseMessage]) -> str:
    results: list[ToolMessage] = []
    for message in reversed(messages):
        if not isinstance(message, ToolMessage):
            break
        results.append(message)
    lines = []
    for result in reversed(results):
        prefix = "Sorry, that did not work: " if result.status == "error" else ""
        lines.append(prefix + result.text)
    return "\n".join(lines)


def _brief(messages: Sequence[BaseMessage]) -> str | None:
    # Only the leading system messages are prompts; the history after them is never scanned.
    for message in messages:
        if not isinstance(message, SystemMessage):
            return None
        if message.text.startswith(BRIEF_HEADER):
            return message.text
    return None


def _with_focus(reply: str, brief: str | None) -> str:
    if brief is None:
        return reply
    focus = next((line for line in brief.splitlines() if line.startswith("Focus:")), None)
    return f"{reply}\n{focus}" if focus else reply


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    return f"“{flat[:QUOTE_CHARS]}…”" if len(flat) > QUOTE_CHARS else f"“{flat}”"
