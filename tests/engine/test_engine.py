"""IsotopeEngine on real PostgreSQL: sessions, turns, durability before ``done``, failures, reloads."""

from __future__ import annotations

import logging
import threading

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from app.agent.offline import OfflineChatModel
from app.config import EngineConfig, OpenAIConfig, Settings
from app.core.engine import IsotopeEngine
from app.core.postgres_session_manager import SessionManager
from app.errors import EngineError, InvalidInput, SessionNotFound, StoreNotOpen

from .fake_openai import FakeOpenAI


@pytest.fixture
def engine(settings: Settings):
    with IsotopeEngine(config=settings) as engine:
        yield engine


@pytest.fixture
def store(settings: Settings):
    """A second, independent manager on the same database: what another process would see."""
    with SessionManager(settings, use_postgres=True) as manager:
        yield manager


def run(engine, session_id, text):
    return list(engine.resume_workflow(user_input=text, session_id=session_id, stream=True))


class Flaky(OfflineChatModel):
    """The offline model, except that the message ``fail`` makes the call raise."""

    def respond(self, messages, tools):
        if messages[-1].text == "fail":
            raise ConnectionError("model endpoint went away")
        return super().respond(messages, tools)


def test_create_session_is_stored_at_version_1_before_it_returns(engine, store):
    session_id = engine.create_session(metadata={"name": "新会话", "user_id": "user123"})
    stored = store.load(session_id)
    assert stored is not None and stored.version == 1
    assert stored.metadata == {"name": "新会话", "user_id": "user123"}
    assert stored.data["messages"] == [] and stored.data["tasks"] == [] and stored.data["files"] == {}
    with pytest.raises(InvalidInput, match="already exists"):
        engine.create_session(session_id=session_id)
    assert engine.create_session(session_id="chosen-id") == "chosen-id"


def test_a_turn_streams_events_and_done_comes_after_the_save(engine, store):
    session_id = engine.create_session()
    seen_versions = []
    for event in engine.resume_workflow(user_input="add task: write the report", session_id=session_id):
        assert event["session_id"] == session_id
        if event["type"] == "done":
            # At the moment `done` is yielded another manager already reads the new version.
            stored = store.load(session_id)
            seen_versions.append(stored.version)
            assert stored.version == event["version"] == 2
            assert stored.message_count == event["message_count"] == 4
            assert stored.data["tasks"] == [{"id": 1, "title": "write the report", "done": False}]
        else:
            assert store.load(session_id).version == 1  # nothing durable before the turn ends
    assert seen_versions == [2]


def test_event_sequence_of_a_tool_turn(engine):
    session_id = engine.create_session()
    events = run(engine, session_id, "save file plan.md: step one")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "tool_call" and kinds[-1] == "done" and kinds[-2] == "message"
    assert "tool_result" in kinds and "token" in kinds
    assert events[-1]["backend"] == "postgres"


def test_stream_false_returns_one_dict(engine, store):
    session_id = engine.create_session()
    run(engine, session_id, "hello")
    result = engine.resume_workflow(user_input="list files", session_id=session_id, stream=False)
    assert result["response"] == "No files yet."
    assert result["version"] == 3 and result["message_count"] == 6
    assert [e["type"] for e in result["events"]] == ["tool_call", "tool_result", "message", "done"]
    assert store.load(session_id).version == 3


def test_conversation_continues_across_engines(settings, store):
    with IsotopeEngine(config=settings) as first:
        session_id = first.create_session()
        run(first, session_id, "add task: a")
        run(first, session_id, "hello")
    with IsotopeEngine(config=settings) as second:
        assert session_id in {s["session_id"] for s in second.list_sessions()}
        reply = second.resume_workflow(user_input="and now?", session_id=session_id, stream=False)["response"]
        assert reply.startswith("Turn 3:") and "“hello”" in reply
        assert second.get_session(session_id)["tasks"][0]["title"] == "a"


def test_unknown_deleted_and_expired_sessions_raise_before_any_event(engine, store):
    before = store.get_session_statistics()["total_sessions"]
    with pytest.raises(SessionNotFound, match="no-such-session"):
        engine.resume_workflow(user_input="hi", session_id="no-such-session", stream=True)
    deleted = engine.create_session()
    store.delete_session(deleted, soft_delete=True)
    with pytest.raises(SessionNotFound, match=deleted):
        engine.resume_workflow(user_input="hi", session_id=deleted)
    expired = engine.create_session(expires_in_hours=0)
    with pytest.raises(SessionNotFound, match=expired):
        engine.resume_workflow(user_input="hi", session_id=expired, stream=False)
    assert store.get_session_statistics()["total_sessions"] == before + 2
    assert store.load("no-such-session") is None


def test_bad_input_is_rejected(engine):
    session_id = engine.create_session()
    with pytest.raises(InvalidInput):
        engine.resume_workflow(user_input="   ", session_id=session_id)


def test_a_model_failure_yields_error_and_leaves_the_session_as_it_was(settings, store):
    with IsotopeEngine(config=settings, model=Flaky()) as engine:
        session_id = engine.create_session()
        run(engine, session_id, "hello")
        before = store.load(session_id)
        events = run(engine, session_id, "fail")
        assert events[-1]["type"] == "error" and "done" not in [e["type"] for e in events]
        assert events[-1]["error"] == "ConnectionError" and "unchanged at version 2" in events[-1]["message"]
        after = store.load(session_id)
        assert (after.version, after.data) == (before.version, before.data)
        # The engine's copy is untouched too: the next turn is turn 2, not 3.
        assert engine.resume_workflow("again", session_id, stream=False)["response"].startswith("Turn 2:")
        with pytest.raises(EngineError, match="model failed") as info:
            engine.resume_workflow("fail", session_id, stream=False)
        assert isinstance(info.value.__cause__, ConnectionError)


def test_a_tool_failure_after_a_successful_tool_saves_nothing(settings, store):
    @tool
    def list_files() -> str:
        """Breaks."""
        raise OSError("disk gone")

    with IsotopeEngine(config=settings, tools=[list_files]) as engine:
        session_id = engine.create_session()
        events = run(engine, session_id, "add task: kept only if the turn completes\nlist files")
        assert [e["type"] for e in events if e["type"] != "token"][-1] == "error"
        # add_task ran (in the turn's private workspace) before list_files broke.
        assert [e["name"] for e in events if e["type"] == "tool_call"] == ["add_task", "list_files"]
        stored = store.load(session_id)
        assert stored.version == 1 and stored.data["tasks"] == [] and stored.data["messages"] == []


def test_an_http_500_from_a_real_endpoint_is_an_error_event(settings, store, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-x")
    with FakeOpenAI() as server:
        openai = OpenAIConfig(base_url=server.base_url, api_key_env="FAKE_KEY", max_retries=0)
        configured = settings.model_copy(update={"engine": EngineConfig(model="openai", openai=openai)})
        with IsotopeEngine(config=configured) as engine:
            session_id = engine.create_session()
            assert engine.resume_workflow("hi", session_id, stream=False)["response"] == "Echo 1: hi"
            events = run(engine, session_id, "explode")
    assert events[-1]["type"] == "error" and "model failed" in events[-1]["message"]
    assert store.load(session_id).version == 2


def test_reload_when_another_writer_moved_the_version(settings, store):
    with IsotopeEngine(config=settings) as a, IsotopeEngine(config=settings, restore=False) as b:
        session_id = a.create_session()
        replies = []
        for n in range(6):
            engine = a if n % 2 == 0 else b
            replies.append(engine.resume_workflow(f"message {n}", session_id, stream=False)["response"])
        assert [r.split(":")[0] for r in replies] == [f"Turn {n}" for n in range(1, 7)]
        # A direct save by someone else (the API, a script) is picked up as well.
        data = store.load(session_id).data
        data["messages"] += [HumanMessage("from a script", id="s1"), AIMessage("noted", id="s2")]
        store.save(session_id, data)
        reply = a.resume_workflow("after the script", session_id, stream=False)["response"]
        assert reply.startswith("Turn 8:") and "“from a script”" in reply
    assert store.load(session_id).message_count == 16


def test_every_turn_appends_instead_of_rewriting(settings, caplog):
    with caplog.at_level(logging.INFO, logger="isotope.engine"), IsotopeEngine(config=settings) as engine:
        session_id = engine.create_session()
        for text in ["hello", "add task: x", "complete task 1", "bye"]:
            engine.resume_workflow(text, session_id, stream=False)
    turns = [r.getMessage() for r in caplog.records if r.getMessage().startswith("turn session=")]
    assert [t.split("appended=")[1].split()[0] for t in turns] == ["2", "4", "4", "2"]
    assert not any("rewritten" in t for t in turns)


def test_file_store_when_postgres_sessions_are_off(settings):
    with IsotopeEngine(config=settings, enable_postgres_sessions=False) as engine:
        session_id = engine.create_session()
        done = run(engine, session_id, "add task: offline")[-1]
        assert done["backend"] == "files" and done["version"] == 2
    with IsotopeEngine(config=settings.model_copy(update={"postgres_sessions": False})) as again:
        assert again.get_session(session_id)["tasks"][0]["title"] == "offline"
        assert again.restore_result["restored_count"] >= 1


def test_restore_at_start_up_loads_active_sessions(settings):
    with IsotopeEngine(config=settings) as engine:
        ids = [engine.create_session() for _ in range(3)]
        run(engine, ids[0], "hello")
    with IsotopeEngine(config=settings) as engine:
        result = engine.restore_result
        assert result["restored_count"] == 3 and result["failed_count"] == 0
        assert result["session_ids"] == [ids[0], ids[2], ids[1]]  # newest first
        assert "sessions" not in result


def test_verbose_logs_ids_store_and_timings_never_bodies(settings, caplog):
    secret_text = "my bank PIN is 4321"
    with caplog.at_level(logging.INFO, logger="isotope"), IsotopeEngine(config=settings, verbose=True) as e:
        session_id = e.create_session()
        run(e, session_id, secret_text)
        run(e, session_id, f"save file pin.txt: {secret_text}")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert session_id in text and "store=postgres" in text and "graph=" in text
    assert "4321" not in text and "PIN" not in text
    assert all(r.name.startswith("isotope") for r in caplog.records if r.levelno >= logging.INFO)
    if settings.database_url is not None and "password" in settings.database_url.get_secret_value():
        assert settings.database_url.get_secret_value() not in text


def test_enhanced_graph_by_config(settings):
    with IsotopeEngine(config=settings.model_copy(update={"engine": EngineConfig(enhanced_graph=True)})) as e:
        assert e.graph.name == "isotope-enhanced"
        session_id = e.create_session()
        e.resume_workflow("add task: plan", session_id, stream=False)
        assert e.get_session(session_id)["metadata"]["progress"]["focus"] == 1
    with IsotopeEngine(config=settings) as engine:
        assert engine.graph.name == "isotope"


def test_threads_sharing_one_engine_take_turns(settings, store):
    """The lock is per session across threads too: 3 threads x 8 turns, each stored once, in order."""
    with IsotopeEngine(config=settings) as engine:
        session_id = engine.create_session()
        errors: list[BaseException] = []

        def talk(name: str) -> None:
            try:
                for n in range(8):
                    engine.resume_workflow(f"{name} {n}", session_id, stream=False)
            except BaseException as exc:  # reported below; a thread must not swallow it
                errors.append(exc)

        threads = [threading.Thread(target=talk, args=(name,)) for name in "xyz"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    stored = store.load(session_id)
    assert stored.version == 25 and stored.message_count == 48
    humans = [m.content for m in stored.data["messages"] if m.type == "human"]
    for name in "xyz":
        assert [h for h in humans if h[0] == name] == [f"{name} {n}" for n in range(8)]
    replies = [m.content for m in stored.data["messages"] if m.type == "ai"]
    assert [r.split(":")[0] for r in replies] == [f"Turn {n}" for n in range(1, 25)]


def test_an_engine_nobody_closes_releases_its_pool_when_collected(settings):
    engine = IsotopeEngine(config=settings)  # the guide never calls close()
    manager = engine.manager
    engine.create_session()
    # Plain reference counting frees it (no gc.collect(): that would also surface other tests' garbage).
    del engine
    with pytest.raises(StoreNotOpen):
        manager.load("anything")
