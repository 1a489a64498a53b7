"""The LangGraph graphs. Both run one user turn over the session state; neither keeps anything itself.

Default graph (a ReAct loop)::

    START -> agent --tool calls--> tools -> agent ...
                   --answer-----> END
                   --tool calls past max_steps--> stop -> END

Enhanced graph (``enhanced_graph: true``), a plan/act loop over the session's tasks::

    START -> plan -> agent --tool calls--> tools -> plan -> agent ...
                           --answer-----> review -> END

* ``plan`` writes a *workspace brief* before every model call: open and done tasks, the files, and
  the **focus** (the first open task). It is passed to the model as a system message and never
  saved, so after each tool step the model plans again from the updated tasks — complete task 1 and
  the next call already sees task 2 as the focus.
* ``review`` records the turn's progress in the session's ``metadata["progress"]``
  (open/done counts, focus, tools used), so the plan carries across turns and restarts.

``max_steps`` caps model calls per turn in both graphs. When the model still wants tools at the cap,
``stop`` answers every pending call with an error tool message and ends with a short reply: the
saved history never holds a tool call without its answer, which OpenAI-style APIs would reject.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolCall, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import ValidationError

from app.agent.offline import BRIEF_HEADER
from app.agent.session_state import AgentState
from app.agent.tools import Workspace
from app.errors import EngineError, InvalidInput

SYSTEM_PROMPT = (
    "You are Isotope, a helpful assistant. The session has a task list and text files; use the tools "
    "to read and change them, and answer briefly."
)


def build_graph(
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    *,
    enhanced: bool = False,
    max_steps: int = 8,
    system_prompt: str = SYSTEM_PROMPT,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the turn graph for this model and these tools (see the module docstring)."""
    bound = model.bind_tools(list(tools))
    by_name = {t.name: t for t in tools}

    def agent(state: AgentState) -> dict[str, Any]:
        prompt: list[BaseMessage] = [SystemMessage(system_prompt)]
        if state.get("brief"):
            prompt.append(SystemMessage(state["brief"]))
        reply = bound.invoke([*prompt, *state["messages"]])
        return {"messages": [reply], "steps": state.get("steps", 0) + 1}

    def tools_node(state: AgentState) -> dict[str, Any]:
        workspace = Workspace.from_state(dict(state))
        calls = _pending_calls(state["messages"])
        results = [_run_tool(by_name, call, workspace) for call in calls]
        return {"messages": results, "tasks": workspace.tasks, "files": workspace.files}

    def stop(state: AgentState) -> dict[str, Any]:
        note = f"Not run: this turn reached its limit of {max_steps} model calls."
        pending = _pending_calls(state["messages"])
        answers: list[BaseMessage] = [_tool_message(call, note, "error") for call in pending]
        answers.append(AIMessage(f"I stopped after {max_steps} steps without finishing; say 'continue' to go on."))
        return {"messages": answers}

    def route(state: AgentState) -> Literal["tools", "stop", "done"]:
        if not _pending_calls(state["messages"]):
            return "done"
        return "stop" if state.get("steps", 0) >= max_steps else "tools"

    builder = StateGraph(AgentState)
    builder.add_node("agent", agent)
    builder.add_node("tools", tools_node)
    builder.add_node("stop", stop)
    builder.add_edge("stop", END)
    if enhanced:
        builder.add_node("plan", plan)
        builder.add_node("review", review)
        builder.add_edge(START, "plan")
        builder.add_edge("plan", "agent")
        builder.add_edge("tools", "plan")
        builder.add_conditional_edges("agent", route, {"tools": "tools", "stop": "stop", "done": "review"})
        builder.add_edge("review", END)
    else:
        builder.add_edge(START, "agent")
        builder.add_edge("tools", "agent")
        builder.add_conditional_edges("agent", route, {"tools": "tools", "stop": "stop", "done": END})
    return builder.compile(name="isotope-enhanced" if enhanced else "isotope")


def plan(state: AgentState) -> dict[str, Any]:
    """Write the workspace brief the next model call plans from."""
    return {"brief": workspace_brief(state.get("tasks") or [], state.get("files") or {})}


def workspace_brief(tasks: Sequence[dict[str, Any]], files: dict[str, str]) -> str:
    open_tasks = [t for t in tasks if not t.get("done")]
    lines = [BRIEF_HEADER]
    listed = "; ".join(f"#{t['id']} {t['title']}" for t in open_tasks) or "none"
    lines.append(f"Open tasks ({len(open_tasks)}): {listed}")
    lines.append(f"Done tasks: {len(tasks) - len(open_tasks)} of {len(tasks)}")
    lines.append(f"Files ({len(files)}): {', '.join(sorted(files)) or 'none'}")
    if open_tasks:
        focus = open_tasks[0]
        lines.append(f"Focus: task #{focus['id']} {focus['title']} ({len(open_tasks)} open)")
    else:
        lines.append("Focus: no open tasks")
    return "\n".join(lines)


def review(state: AgentState) -> dict[str, Any]:
    """Record the turn's progress in the session metadata (the plan's memory across turns)."""
    tasks = state.get("tasks") or []
    open_tasks = [t for t in tasks if not t.get("done")]
    used = sorted({m.name for m in _this_turn(state["messages"]) if isinstance(m, ToolMessage) and m.name})
    metadata = dict(state.get("metadata") or {})
    metadata["progress"] = {
        "open": len(open_tasks),
        "done": len(tasks) - len(open_tasks),
        "focus": open_tasks[0]["id"] if open_tasks else None,
        "tools_used": used,
    }
    return {"metadata": metadata}


def _this_turn(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].type == "human":
            return list(messages[index + 1 :])
    return list(messages)


def _pending_calls(messages: Sequence[BaseMessage]) -> list[ToolCall]:
    last = messages[-1] if messages else None
    return list(last.tool_calls) if isinstance(last, AIMessage) else []


def _run_tool(by_name: dict[str, BaseTool], call: ToolCall, workspace: Workspace) -> ToolMessage:
    tool = by_name.get(call["name"])
    if tool is None:
        return _tool_message(call, f"Unknown tool {call['name']!r}; available: {', '.join(by_name)}", "error")
    args = dict(call["args"])
    if "workspace" in getattr(tool.get_input_schema(), "model_fields", {}):
        args["workspace"] = workspace
    try:
        output = tool.invoke({**call, "args": args})
    except (InvalidInput, ValidationError) as exc:
        # The model asked for something impossible: tell it, and let it answer the user.
        return _tool_message(call, _problem(exc), "error")
    except Exception as exc:
        name = call["name"]
        raise EngineError(f"tool {name!r} failed ({type(exc).__name__}: {exc})") from exc
    content = output.content if isinstance(output, ToolMessage) else str(output)
    return _tool_message(call, content, "success")


def _tool_message(call: ToolCall, content: Any, status: Literal["success", "error"]) -> ToolMessage:
    return ToolMessage(
        content=content, tool_call_id=call["id"] or "", name=call["name"], status=status, id=str(uuid.uuid4())
    )


def _problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors(include_url=False))
        return f"Invalid arguments: {fields or 'see the tool schema'}"
    return exc.problem if isinstance(exc, InvalidInput) else str(exc)
