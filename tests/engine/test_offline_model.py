"""The offline model is a real, deterministic LangChain chat model: tools, streaming, history."""

from __future__ import annotations

from functools import reduce

from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from app.agent.offline import BRIEF_HEADER, OfflineChatModel, parse_commands
from app.agent.tools import default_tools


def bound():
    return OfflineChatModel().bind_tools(default_tools())


def test_each_command_becomes_a_tool_call_with_typed_arguments():
    cases = {
        "add task: buy milk": ("add_task", {"title": "buy milk"}),
        "Complete task #3": ("complete_task", {"task_id": 3}),
        "list tasks": ("list_tasks", {}),
        "save file notes.txt: hello": ("save_file", {"name": "notes.txt", "content": "hello"}),
        "read file notes.txt": ("read_file", {"name": "notes.txt"}),
        "LIST FILES": ("list_files", {}),
    }
    for text, (name, args) in cases.items():
        reply = bound().invoke([HumanMessage(text)])
        assert reply.content == ""
        assert [(c["name"], c["args"]) for c in reply.tool_calls] == [(name, args)], text


def test_several_commands_and_a_multiline_file():
    commands = parse_commands("add task: a\nsave file f.md: line 1\nline 2\nlist tasks")
    assert [(c.name, c.args) for c in commands] == [
        ("add_task", {"title": "a"}),
        ("save_file", {"name": "f.md", "content": "line 1\nline 2"}),
        ("list_tasks", {}),
    ]


def test_streaming_yields_the_same_message_as_invoke_token_by_token():
    history = [HumanMessage("hello there"), AIMessage("hi"), HumanMessage("what did I say?")]
    whole = bound().invoke(history)
    chunks = list(bound().stream(history))
    assert len([c for c in chunks if c.content]) > 3
    assert reduce(lambda a, b: a + b, chunks).content == whole.content

    calls = list(bound().stream([HumanMessage("add task: x\nread file y")]))
    assert (
        reduce(lambda a, b: a + b, calls).tool_calls
        == bound().invoke([HumanMessage("add task: x\nread file y")]).tool_calls
    )


def test_replies_show_the_history_turn_number_and_previous_message():
    first = bound().invoke([HumanMessage("hello")])
    assert first.content.startswith("Turn 1:")
    history = [HumanMessage("hello"), first, HumanMessage("how are you")]
    second = bound().invoke(history)
    assert second.content.startswith("Turn 2:")
    assert "“hello”" in second.content and "“how are you”" in second.content


def test_after_tool_results_it_answers_with_them():
    call = bound().invoke([HumanMessage("complete task 9")])
    history = [
        HumanMessage("complete task 9"),
        call,
        ToolMessage("there is no task #9", tool_call_id=call.tool_calls[0]["id"], status="error"),
    ]
    assert bound().invoke(history).content == "Sorry, that did not work: there is no task #9"


def test_without_bound_tools_it_says_so_instead_of_calling():
    reply = OfflineChatModel().invoke([HumanMessage("list files")])
    assert not reply.tool_calls
    assert "list_files" in reply.content


def test_a_workspace_brief_adds_the_focus_line():
    brief = SystemMessage(f"{BRIEF_HEADER}\nFocus: task #2 write report (1 open)")
    reply = bound().invoke([brief, HumanMessage("hi")])
    assert reply.content.endswith("\nFocus: task #2 write report (1 open)")


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=6))
def test_deterministic_and_counts_turns_for_any_conversation(texts):
    history = []
    for turn, text in enumerate(texts, start=1):
        history.append(HumanMessage(text))
        a, b = bound().invoke(history), bound().invoke(list(history))
        assert (a.content, a.tool_calls) == (b.content, b.tool_calls)
        if not a.tool_calls and not parse_commands(text):
            assert a.content.startswith(f"Turn {turn}:")
        history.append(AIMessage(a.content or "ok"))
