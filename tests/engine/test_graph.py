"""The graphs and tools over the session state, with the offline model and no storage."""

from __future__ import annotations

import copy

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool

from app.agent.graph import build_graph
from app.agent.offline import OfflineChatModel
from app.agent.run import GraphRun
from app.agent.session_state import empty_session_state, to_session_data
from app.agent.tools import default_tools
from app.errors import EngineError


def run(state, text, *, enhanced=False, tools=None, max_steps=8, model=None):
    graph = build_graph(model or OfflineChatModel(), tools or default_tools(), enhanced=enhanced, max_steps=max_steps)
    turn = GraphRun(graph, state, text, max_steps=max_steps)
    events = list(turn.events())
    return events, to_session_data(turn.state), turn


def types(events):
    return [e["type"] for e in events if e["type"] != "token"]


def test_a_command_is_tool_call_then_tool_result_then_reply():
    events, state, turn = run(empty_session_state(), "add task: buy milk")
    assert types(events) == ["tool_call", "tool_result", "message"]
    assert events[0] == {
        "type": "tool_call",
        "id": "call_1_1",
        "name": "add_task",
        "args": {"title": "buy milk"},
    }
    assert state["tasks"] == [{"id": 1, "title": "buy milk", "done": False}]
    assert [m.type for m in turn.new_messages()] == ["human", "ai", "tool", "ai"]
    tokens = "".join(e["content"] for e in events if e["type"] == "token")
    assert tokens == events[-1]["content"] == "Added task #1: buy milk"


def test_the_six_commands_act_on_the_state():
    state = empty_session_state()
    script = [
        ("add task: write report", "Added task #1: write report"),
        ("add task: send it", "Added task #2: send it"),
        ("complete task 1", "Completed task #1: write report"),
        ("list tasks", "#1 [x] write report\n#2 [ ] send it"),
        ("save file notes.md: first line\nsecond line", "Saved file notes.md (22 characters)"),
        ("read file notes.md", "first line\nsecond line"),
        ("list files", "notes.md (22 characters)"),
    ]
    for text, reply in script:
        events, state, _ = run(state, text)
        assert events[-1] == {"type": "message", "role": "assistant", "content": reply}, text
    assert state["files"] == {"notes.md": "first line\nsecond line"}
    assert [t["done"] for t in state["tasks"]] == [True, False]
    assert len(state["messages"]) == 7 * 4


def test_impossible_requests_are_answered_not_raised():
    events, state, _ = run(empty_session_state(), "complete task 4\nread file nope")
    results = [e for e in events if e["type"] == "tool_result"]
    assert [r["status"] for r in results] == ["error", "error"]
    assert "no task #4" in events[-1]["content"] and "no file named 'nope'" in events[-1]["content"]


def test_plain_chat_sees_the_history():
    state = empty_session_state()
    for n, text in enumerate(["hello", "second", "third"], start=1):
        events, state, _ = run(state, text)
        assert events[-1]["content"].startswith(f"Turn {n}:")
    assert "“second”" in events[-1]["content"]


def test_a_turn_never_mutates_the_state_it_was_given():
    _, state, _ = run(empty_session_state(), "add task: a\nsave file f: x")
    before = copy.deepcopy(state)
    history = list(state["messages"])
    run(state, "complete task 1\nsave file f: changed")
    assert state == before and state["messages"] == history


def test_enhanced_graph_plans_from_the_tasks_and_records_progress():
    _, state, _ = run(empty_session_state(), "add task: a\nadd task: b", enhanced=True)
    assert state["metadata"]["progress"] == {"open": 2, "done": 0, "focus": 1, "tools_used": ["add_task"]}
    events, state, _ = run(state, "complete task 1", enhanced=True)
    # The plan is redone after the tool step: the reply already focuses on the next open task.
    assert events[-1]["content"] == "Completed task #1: a\nFocus: task #2 b (1 open)"
    assert state["metadata"]["progress"]["focus"] == 2
    events, _, _ = run(state, "hi", enhanced=True)
    assert events[-1]["content"].endswith("Focus: task #2 b (1 open)")
    # The brief is not saved anywhere.
    assert "brief" not in state and all(m.type != "system" for m in state["messages"])


def test_the_step_cap_answers_every_pending_call():
    events, state, turn = run(empty_session_state(), "list tasks", max_steps=1)
    assert types(events) == ["tool_call", "tool_result", "message"]
    assert events[1]["status"] == "error" and "limit of 1" in events[1]["content"]
    assert "stopped after 1 steps" in events[-1]["content"]
    assert isinstance(turn.new_messages()[2], ToolMessage)


def test_a_broken_tool_fails_the_turn():
    @tool
    def list_files() -> str:
        """Always breaks."""
        raise RuntimeError("disk on fire")

    with pytest.raises(EngineError, match="'list_files' failed") as info:
        run(empty_session_state(), "list files", tools=[list_files])
    assert isinstance(info.value.__cause__, RuntimeError)


def test_unknown_tool_and_bad_arguments_go_back_to_the_model():
    from app.agent.graph import _run_tool
    from app.agent.tools import Workspace, complete_task

    ws = Workspace()
    bad = _run_tool({"complete_task": complete_task}, {"name": "complete_task", "args": {}, "id": "c1"}, ws)
    assert bad.status == "error" and "task_id" in bad.text
    unknown = _run_tool({}, {"name": "rm_rf", "args": {}, "id": "c2"}, ws)
    assert unknown.status == "error" and "Unknown tool" in unknown.text


def test_message_ids_are_set_on_everything_the_turn_adds():
    _, _, turn = run(empty_session_state(), "add task: x")
    assert all(m.id for m in turn.new_messages())
    assert isinstance(turn.new_messages()[0], HumanMessage)
