"""IsotopeSession against the Agents SDK's own session test cases, ported.

The cases are those of the SDK's ``tests/extensions/memory/test_sqlalchemy_session.py`` and
``tests/test_session.py`` (SQLite) that describe behaviour rather than SQLAlchemy or SQLite
internals: direct operations, limits, pop on empty, concurrent pops and first writes, isolation,
case- and space-sensitive ids, non-ASCII and structured items, and ``Runner.run`` conversations
with the SDK's scripted model. Engine-specific ones (MySQL collations, mocked engines, rows of
invalid JSON written behind the session's back) have no counterpart here. Coroutines run with
``asyncio.run``; no async test plugin is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from agents import Agent, Runner
from agents.memory import SessionSettings
from agents.memory.session import Session
from agents.testing import ScriptedModel, assistant_message

from app.adapters.openai_agents import IsotopeSession
from app.core.postgres_session_manager import SessionManager

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def new_session(manager: SessionManager) -> Iterator[Callable[..., IsotopeSession]]:
    def make(session_id: str, **kwargs: Any) -> IsotopeSession:
        return IsotopeSession(session_id, manager, **kwargs)

    yield make


@pytest.fixture
def agent() -> Agent[Any]:
    return Agent(name="test", model=ScriptedModel())


def _contents(items: list[Any]) -> list[Any]:
    return [item.get("content") for item in items]


def test_it_is_an_agents_sdk_session(new_session: Callable[..., IsotopeSession]) -> None:
    assert isinstance(new_session("protocol"), Session)


def test_direct_operations(new_session: Callable[..., IsotopeSession]) -> None:
    session = new_session("direct_ops_test")

    async def scenario() -> None:
        await session.add_items([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there!"}])
        assert _contents(await session.get_items()) == ["Hello", "Hi there!"]
        popped = await session.pop_item()
        assert popped is not None and popped.get("content") == "Hi there!"
        assert _contents(await session.get_items()) == ["Hello"]
        await session.clear_session()
        assert await session.get_items() == []

    run(scenario())


def test_non_ascii_round_trips_and_is_stored_readably(new_session: Callable[..., IsotopeSession],
                                                      database_url: str) -> None:
    session = new_session("non_ascii_storage")
    item = {"role": "user", "content": "café 我的会话"}
    run(session.add_items([item]))
    assert run(session.get_items()) == [item]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT message::text FROM isotope_messages WHERE session_id = %s",
                           ("non_ascii_storage",)).fetchone()
    assert row is not None and "café 我的会话" in row[0]


def test_runner_integration(new_session: Callable[..., IsotopeSession], agent: Agent[Any]) -> None:
    session = new_session("runner_integration_test")
    model = agent.model
    assert isinstance(model, ScriptedModel)

    async def scenario() -> None:
        model.enqueue([assistant_message("San Francisco")])
        first = await Runner.run(agent, "What city is the Golden Gate Bridge in?", session=session)
        assert first.final_output == "San Francisco"
        model.enqueue([assistant_message("California")])
        second = await Runner.run(agent, "What state is it in?", session=session)
        assert second.final_output == "California"

    run(scenario())
    last_input = model.calls[-1].input
    assert isinstance(last_input, list) and len(last_input) > 1
    assert any("Golden Gate Bridge" in str(item.get("content", "")) for item in last_input)
    stored = run(session.get_items())
    assert len(stored) == 4  # two user turns, two assistant replies


def test_session_isolation(new_session: Callable[..., IsotopeSession], agent: Agent[Any]) -> None:
    one, two = new_session("session_1"), new_session("session_2")
    model = agent.model
    assert isinstance(model, ScriptedModel)

    async def scenario() -> Any:
        model.enqueue([assistant_message("I like cats.")])
        await Runner.run(agent, "I like cats.", session=one)
        model.enqueue([assistant_message("I like dogs.")])
        await Runner.run(agent, "I like dogs.", session=two)
        model.enqueue([assistant_message("You said you like cats.")])
        return await Runner.run(agent, "What animal did I say I like?", session=one)

    result = run(scenario())
    assert "cats" in result.final_output.lower()
    history = str(model.calls[-1].input)
    assert "cats" in history and "dogs" not in history


def test_session_ids_are_case_sensitive(new_session: Callable[..., IsotopeSession]) -> None:
    upper, lower = new_session("Foo"), new_session("foo")
    run(upper.add_items([{"role": "user", "content": "upper"}]))
    run(lower.add_items([{"role": "user", "content": "lower"}]))
    assert run(upper.get_items()) == [{"role": "user", "content": "upper"}]
    assert run(lower.get_items()) == [{"role": "user", "content": "lower"}]


def test_session_ids_keep_trailing_spaces(new_session: Callable[..., IsotopeSession]) -> None:
    bare, padded = new_session("tenant"), new_session("tenant ")
    run(bare.add_items([{"role": "user", "content": "bare"}]))
    run(padded.add_items([{"role": "user", "content": "padded"}]))
    assert run(bare.get_items()) == [{"role": "user", "content": "bare"}]
    assert run(padded.get_items()) == [{"role": "user", "content": "padded"}]


def test_get_items_with_limit(new_session: Callable[..., IsotopeSession]) -> None:
    session = new_session("limit_test")
    run(session.add_items([{"role": r, "content": str(n)} for n, r in
                           enumerate(["user", "assistant", "user", "assistant"], start=1)]))
    assert _contents(run(session.get_items(limit=2))) == ["3", "4"]
    assert len(run(session.get_items())) == 4
    assert len(run(session.get_items(limit=10))) == 4
    assert run(session.get_items(limit=0)) == []


def test_session_settings_give_the_default_limit(new_session: Callable[..., IsotopeSession]) -> None:
    session = new_session("settings_limit", session_settings=SessionSettings(limit=3))
    run(session.add_items([{"role": "user", "content": str(n)} for n in range(5)]))
    assert _contents(run(session.get_items())) == ["2", "3", "4"]
    assert _contents(run(session.get_items(limit=1))) == ["4"]  # an explicit limit wins


def test_get_items_limit_returns_fewer_when_history_is_short(new_session: Callable[..., IsotopeSession]) -> None:
    session = new_session("limit_exhausted")
    run(session.add_items([{"role": "user", "content": "only valid"}]))
    assert _contents(run(session.get_items(limit=5))) == ["only valid"]


def test_pop_from_empty_session(new_session: Callable[..., IsotopeSession]) -> None:
    assert run(new_session("empty_session").pop_item()) is None


def test_add_empty_items_list(new_session: Callable[..., IsotopeSession]) -> None:
    session = new_session("add_empty_test")
    run(session.add_items([]))
    assert run(session.get_items()) == []


def test_concurrent_pops_return_each_item_once(new_session: Callable[..., IsotopeSession]) -> None:
    writer, other = new_session("concurrent_pop"), new_session("concurrent_pop")
    run(writer.add_items([{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"}]))

    async def both() -> list[Any]:
        return list(await asyncio.gather(writer.pop_item(), other.pop_item()))

    popped = run(both())
    assert {item["content"] for item in popped if item is not None} == {"first", "second"}
    assert run(writer.get_items()) == []


def test_concurrent_first_writes_lose_nothing(new_session: Callable[..., IsotopeSession]) -> None:
    sessions = [new_session("concurrent_first_write") for _ in range(5)]
    submitted = [f"msg-{i}" for i in range(25)]

    async def all_writes() -> list[Any]:
        return list(await asyncio.gather(
            *(sessions[i % 5].add_items([{"role": "user", "content": c}]) for i, c in enumerate(submitted)),
            return_exceptions=True))

    results = run(all_writes())
    assert [r for r in results if isinstance(r, Exception)] == []
    assert sorted(_contents(run(sessions[0].get_items()))) == sorted(submitted)


def test_concurrent_first_writes_to_different_sessions(new_session: Callable[..., IsotopeSession]) -> None:
    a, b = new_session("shared_engine_a"), new_session("shared_engine_b")

    async def both() -> None:
        await asyncio.gather(a.add_items([{"role": "user", "content": "one"}]),
                             b.add_items([{"role": "user", "content": "two"}]))

    run(both())
    assert _contents(run(a.get_items())) == ["one"]
    assert _contents(run(b.get_items())) == ["two"]


def test_structured_items_round_trip(new_session: Callable[..., IsotopeSession]) -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}]}
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "because"}]}
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"x\": 1}"}
    session = new_session("structured")
    run(session.add_items([message, reasoning, call]))
    assert run(session.get_items()) == [message, reasoning, call]
    assert run(session.pop_item()) == call


def test_clear_then_reuse(new_session: Callable[..., IsotopeSession]) -> None:
    session = new_session("clear_reuse")
    run(session.add_items([{"role": "user", "content": "old"}]))
    run(session.clear_session())
    run(session.add_items([{"role": "user", "content": "new"}]))
    assert _contents(run(session.get_items())) == ["new"]


def test_another_writer_is_seen_before_appending(new_session: Callable[..., IsotopeSession]) -> None:
    one, two = new_session("two_writers"), new_session("two_writers")
    run(one.add_items([{"role": "user", "content": "a"}]))
    run(two.add_items([{"role": "assistant", "content": "b"}]))
    run(one.add_items([{"role": "user", "content": "c"}]))  # one's copy is stale: it must reload
    assert _contents(run(two.get_items())) == ["a", "b", "c"]


def test_an_sdk_session_is_an_isotope_session(new_session: Callable[..., IsotopeSession],
                                               manager: SessionManager) -> None:
    session = new_session("listed", metadata={"user_id": "u1"}, expires_in_hours=1)
    run(session.add_items([{"role": "user", "content": "x"}]))
    (info,) = manager.list_sessions()
    assert info["session_id"] == "listed" and info["message_count"] == 1
    assert info["metadata"] == {"user_id": "u1"} and info["expires_at"] is not None
    assert manager.load_session("listed") == {"messages": [{"role": "user", "content": "x"}]}


def test_from_url(database_url: str, tmp_path: Any) -> None:
    session = IsotopeSession.from_url("by_url", url=database_url, data_dir=str(tmp_path))
    try:
        run(session.add_items([{"role": "user", "content": "hello"}]))
        assert _contents(run(session.get_items())) == ["hello"]
    finally:
        session.close()


def test_a_session_id_isotope_cannot_store_is_refused(new_session: Callable[..., IsotopeSession]) -> None:
    with pytest.raises(ValueError, match="session_id"):
        new_session("x" * 300)
