"""The tools: add, list and complete tasks; save, read and list files — all acting on the session state.

Each tool is a real LangChain tool (so any model can ``bind_tools`` them and they appear in an
OpenAI ``tools`` array) with one extra argument, ``workspace``, injected by the graph's tools node
and hidden from the model's schema (``InjectedToolArg``). The workspace is a private copy of the
session's tasks and files for the turn; the tools node writes it back into the graph state, so a
failed turn leaves nothing behind.

Two kinds of failure, on purpose:

* the model asked for something impossible (no task 7, no such file, a bad file name): the tool
  raises :class:`~app.errors.InvalidInput`; the tools node answers with an error ``ToolMessage`` and
  the model gets to reply (a person would be told "there is no task 7", not shown a stack trace);
* the tool itself broke (any other exception): the turn fails with an ``error`` event and nothing
  is saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from langchain_core.tools import BaseTool, InjectedToolArg, tool

from app.errors import InvalidInput

MAX_FILE_NAME = 255


@dataclass
class Workspace:
    """The turn's working copy of the session's tasks and files."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Workspace:
        # Copy every task dict: the state's list may be the engine's cached copy.
        return cls([dict(t) for t in state.get("tasks") or []], dict(state.get("files") or {}))

    def task(self, task_id: int) -> dict[str, Any]:
        for item in self.tasks:
            if item.get("id") == task_id:
                return item
        known = ", ".join(f"#{t['id']}" for t in self.tasks) or "none yet"
        raise InvalidInput("task_id", f"there is no task #{task_id} (tasks: {known})")


Injected = Annotated[Workspace, InjectedToolArg]


def _format_task(item: dict[str, Any]) -> str:
    return f"#{item['id']} [{'x' if item.get('done') else ' '}] {item['title']}"


@tool
def add_task(title: str, workspace: Injected) -> str:
    """Add a task to the session's task list. Returns the new task's number."""
    title = title.strip()
    if not title:
        raise InvalidInput("title", "a task needs a title")
    next_id = max((int(t.get("id", 0)) for t in workspace.tasks), default=0) + 1
    workspace.tasks.append({"id": next_id, "title": title, "done": False})
    return f"Added task #{next_id}: {title}"


@tool
def list_tasks(workspace: Injected) -> str:
    """List the session's tasks with their numbers and whether they are done."""
    if not workspace.tasks:
        return "No tasks yet."
    return "\n".join(_format_task(t) for t in workspace.tasks)


@tool
def complete_task(task_id: int, workspace: Injected) -> str:
    """Mark the task with this number as done."""
    item = workspace.task(task_id)
    if item.get("done"):
        return f"Task #{task_id} was already done: {item['title']}"
    item["done"] = True
    return f"Completed task #{task_id}: {item['title']}"


@tool
def save_file(name: str, content: str, workspace: Injected) -> str:
    """Save a text file in the session under this name, replacing any file of that name."""
    name = _check_name(name)
    existed = name in workspace.files
    workspace.files[name] = content
    return f"{'Updated' if existed else 'Saved'} file {name} ({len(content)} characters)"


@tool
def read_file(name: str, workspace: Injected) -> str:
    """Return the content of the session's file with this name."""
    name = name.strip()
    if name not in workspace.files:
        known = ", ".join(sorted(workspace.files)) or "none yet"
        raise InvalidInput("name", f"there is no file named {name!r} (files: {known})")
    return workspace.files[name]


@tool
def list_files(workspace: Injected) -> str:
    """List the names and sizes of the session's files."""
    if not workspace.files:
        return "No files yet."
    return "\n".join(f"{name} ({len(text)} characters)" for name, text in sorted(workspace.files.items()))


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_FILE_NAME or any(c in name for c in "\r\n\0"):
        raise InvalidInput("name", f"a file name is 1 to {MAX_FILE_NAME} characters on one line")
    return name


SESSION_TOOLS: tuple[BaseTool, ...] = (add_task, list_tasks, complete_task, save_file, read_file, list_files)


def default_tools() -> list[BaseTool]:
    """The tools every engine binds to its model."""
    return list(SESSION_TOOLS)
