"""IsotopeSaver under a real LangGraph graph: appends, edits, forks, several savers, sessions."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from app.adapters.langgraph import AsyncIsotopeSaver, IsotopeSaver
from app.core.postgres_session_manager import SessionManager


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _graph(saver: IsotopeSaver) -> CompiledStateGraph[Any, Any, Any, Any]:
    def reply(state: State) -> dict[str, Any]:
        last = state["messages"][-1]
        return {"messages": [AIMessage(f"echo {last.content}")]}

    builder = StateGraph(State)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


def _cfg(thread: str, checkpoint_id: str | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _texts(graph: CompiledStateGraph[Any, Any, Any, Any], thread: str) -> list[str]:
    return [str(m.content) for m in graph.get_state(_cfg(thread)).values["messages"]]


def _count(url: str, statement: str, *params: Any) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(statement, params).fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0


ITEMS = "SELECT count(*) FROM isotope_lg_items WHERE session_id = %s"


def test_messages_are_stored_once_each_however_long_the_thread(database_url: str) -> None:
    with IsotopeSaver.from_conn_string(database_url) as saver:
        graph = _graph(saver)
        for turn in range(12):
            graph.invoke({"messages": [HumanMessage(f"q{turn}")]}, _cfg("t1"))
        expected = [text for turn in range(12) for text in (f"q{turn}", f"echo q{turn}")]
        assert _texts(graph, "t1") == expected
    # 24 messages, 24 item rows: no turn re-wrote the history.
    assert _count(database_url, ITEMS, "t1") == 24
    with IsotopeSaver.from_conn_string(database_url) as fresh:
        assert _texts(_graph(fresh), "t1") == expected


def test_a_fresh_process_appends_to_a_loaded_thread(database_url: str) -> None:
    with IsotopeSaver.from_conn_string(database_url) as saver:
        _graph(saver).invoke({"messages": [HumanMessage("one")]}, _cfg("t2"))
    with IsotopeSaver.from_conn_string(database_url) as saver:
        graph = _graph(saver)
        graph.invoke({"messages": [HumanMessage("two")]}, _cfg("t2"))
        assert _texts(graph, "t2") == ["one", "echo one", "two", "echo two"]
    assert _count(database_url, ITEMS, "t2") == 4


def test_edits_and_removals_keep_every_checkpoint_readable(database_url: str) -> None:
    with IsotopeSaver.from_conn_string(database_url) as saver:
        graph = _graph(saver)
        for text in ("a", "b", "c"):
            graph.invoke({"messages": [HumanMessage(text)]}, _cfg("t3"))
        before = graph.get_state(_cfg("t3"))
        first = before.values["messages"][0]
        graph.update_state(_cfg("t3"), {"messages": [RemoveMessage(id=first.id)]})
        graph.update_state(_cfg("t3"), {"messages": [AIMessage("replaced", id=before.values["messages"][3].id)]})
        assert _texts(graph, "t3") == ["echo a", "b", "replaced", "c", "echo c"]
        # The checkpoint before the edits still reads as it was.
        old = graph.get_state(before.config)
        assert [m.content for m in old.values["messages"]] == ["a", "echo a", "b", "echo b", "c", "echo c"]
    with IsotopeSaver.from_conn_string(database_url) as fresh:
        graph = _graph(fresh)
        assert _texts(graph, "t3") == ["echo a", "b", "replaced", "c", "echo c"]
        graph.invoke({"messages": [HumanMessage("d")]}, _cfg("t3"))
        assert _texts(graph, "t3")[-2:] == ["d", "echo d"]


def test_an_in_place_edit_of_a_stored_message_is_saved(database_url: str) -> None:
    with IsotopeSaver.from_conn_string(database_url) as saver:
        def edit(state: State) -> dict[str, Any]:
            state["messages"][0].content = "edited in place"
            return {"messages": [AIMessage("ok")]}

        builder = StateGraph(State)
        builder.add_node("edit", edit)
        builder.add_edge(START, "edit")
        graph = builder.compile(checkpointer=saver)
        graph.invoke({"messages": [HumanMessage("original")]}, _cfg("t4"))
        graph.invoke({"messages": [HumanMessage("again")]}, _cfg("t4"))
    with IsotopeSaver.from_conn_string(database_url) as fresh:
        assert _texts(_graph(fresh), "t4")[0] == "edited in place"


def test_a_fork_from_an_old_checkpoint_does_not_disturb_the_main_line(database_url: str) -> None:
    with IsotopeSaver.from_conn_string(database_url) as saver:
        graph = _graph(saver)
        graph.invoke({"messages": [HumanMessage("a")]}, _cfg("t5"))
        fork_point = graph.get_state(_cfg("t5")).config
        graph.invoke({"messages": [HumanMessage("b")]}, _cfg("t5"))
        main_line = graph.get_state(_cfg("t5"))
        # Resume from the older checkpoint: positions 2 and 3 are taken in the main line's epoch.
        fork_id = fork_point["configurable"]["checkpoint_id"]
        graph.invoke({"messages": [HumanMessage("x")]}, _cfg("t5", fork_id))
        assert _texts(graph, "t5") == ["a", "echo a", "x", "echo x"]
        assert [m.content for m in graph.get_state(main_line.config).values["messages"]] == [
            "a", "echo a", "b", "echo b"]


def test_two_savers_take_turns_on_one_thread(database_url: str) -> None:
    with IsotopeSaver.from_conn_string(database_url) as one, IsotopeSaver.from_conn_string(database_url) as two:
        graphs = [_graph(one), _graph(two)]
        for turn in range(6):
            graphs[turn % 2].invoke({"messages": [HumanMessage(f"m{turn}")]}, _cfg("t6"))
        assert _texts(graphs[0], "t6") == [t for n in range(6) for t in (f"m{n}", f"echo m{n}")]


def test_a_thread_is_an_isotope_session(database_url: str, manager: SessionManager) -> None:
    saver = IsotopeSaver.from_manager(manager)
    try:
        graph = _graph(saver)
        graph.invoke({"messages": [HumanMessage("hi")]}, _cfg("t7"))
        assert "t7" in [s["session_id"] for s in manager.list_sessions()]
        assert manager.count_sessions() == 1
        assert manager.delete_session("t7", soft_delete=True)
        assert graph.get_state(_cfg("t7")).values == {}  # a deleted session has no state
        graph.invoke({"messages": [HumanMessage("back")]}, _cfg("t7"))
        assert manager.delete_session("t7", soft_delete=False)
        assert _count(database_url, "SELECT count(*) FROM isotope_lg_checkpoints") == 0
        assert _count(database_url, "SELECT count(*) FROM isotope_lg_items") == 0
        graph.invoke({"messages": [HumanMessage("new life")]}, _cfg("t7"))
        assert _texts(graph, "t7") == ["new life", "echo new life"]
    finally:
        saver.close()


def test_expired_threads_are_gone_for_the_saver(database_url: str, manager: SessionManager) -> None:
    with IsotopeSaver.from_conn_string(database_url, expires_in_hours=1) as saver:
        graph = _graph(saver)
        graph.invoke({"messages": [HumanMessage("hi")]}, _cfg("t8"))
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE isotope_sessions SET expires_at = now() - interval '1 second' WHERE session_id = 't8'")
        assert graph.get_state(_cfg("t8")).values == {}
        assert manager.cleanup_expired_sessions(hard_delete=True) == 1
        assert _count(database_url, "SELECT count(*) FROM isotope_lg_checkpoints") == 0


def test_a_thread_id_isotope_cannot_store_is_refused_before_writing(database_url: str) -> None:
    with IsotopeSaver.from_conn_string(database_url) as saver, pytest.raises(ValueError, match="thread_id"):
        _graph(saver).invoke({"messages": [HumanMessage("x")]}, _cfg("x" * 300))
    assert _count(database_url, "SELECT count(*) FROM isotope_sessions") == 0


def test_the_async_saver_runs_a_graph(database_url: str) -> None:
    async def main() -> list[str]:
        async with AsyncIsotopeSaver.from_conn_string(database_url) as saver:
            graph = _graph(saver)
            for text in ("a", "b"):
                await graph.ainvoke({"messages": [HumanMessage(text)]}, _cfg("t9"))
            state = await graph.aget_state(_cfg("t9"))
            return [str(m.content) for m in state.values["messages"]]

    assert asyncio.run(main()) == ["a", "echo a", "b", "echo b"]
    assert _count(database_url, ITEMS, "t9") == 4
