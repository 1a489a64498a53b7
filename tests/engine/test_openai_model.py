"""Real models by configuration: the OpenAI-compatible path against a local chat-completions server."""

from __future__ import annotations

import openai
import pytest

from app.agent.graph import build_graph
from app.agent.models import make_model, make_openai_model
from app.agent.offline import OfflineChatModel
from app.agent.run import GraphRun
from app.agent.session_state import empty_session_state, to_session_data
from app.agent.tools import default_tools
from app.config import EngineConfig, OpenAIConfig
from app.errors import ConfigError

from .fake_openai import FakeOpenAI

ENV = {"FAKE_KEY": "sk-test-123"}


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def config(server, **extra):
    return OpenAIConfig(base_url=server.base_url, model="fake-1", api_key_env="FAKE_KEY", max_retries=0, **extra)


def turn(model, state, text):
    graph = build_graph(model, default_tools())
    run = GraphRun(graph, state, text, max_steps=8)
    return list(run.events()), to_session_data(run.state)


def test_streamed_tool_call_round_trip(server):
    model = make_model(EngineConfig(model="openai", openai=config(server)), ENV)
    events, state = turn(model, empty_session_state(), "add task: ship it")
    kinds = [e["type"] for e in events if e["type"] != "token"]
    assert kinds == ["tool_call", "tool_result", "message"]
    assert events[0]["name"] == "add_task" and events[0]["args"] == {"title": "ship it"}
    assert state["tasks"] == [{"id": 1, "title": "ship it", "done": False}]
    tokens = [e["content"] for e in events if e["type"] == "token"]
    assert len(tokens) > 2 and "".join(tokens) == events[-1]["content"] == "Tool said: Added task #1: ship it"

    first, second = server.requests
    assert first["headers"]["authorization"] == "Bearer sk-test-123"
    assert first["body"]["model"] == "fake-1" and first["body"]["stream"] is True
    assert {t["function"]["name"] for t in first["body"]["tools"]} == {
        "add_task",
        "list_tasks",
        "complete_task",
        "save_file",
        "read_file",
        "list_files",
    }
    # The injected workspace argument never reaches the model's schema.
    add = next(t for t in first["body"]["tools"] if t["function"]["name"] == "add_task")
    assert list(add["function"]["parameters"]["properties"]) == ["title"]
    # The second call carries the tool call and its answer, as the protocol requires.
    roles = [m["role"] for m in second["body"]["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]


def test_history_goes_to_the_endpoint(server):
    model = make_openai_model(config(server), ENV)
    state = empty_session_state()
    for text in ["one", "two", "three"]:
        events, state = turn(model, state, text)
    assert events[-1]["content"] == "Echo 3: three"
    sent = server.requests[-1]["body"]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["one", "two", "three"]


def test_non_streaming_invoke(server):
    model = make_openai_model(config(server), ENV).bind_tools(default_tools())
    reply = model.invoke("add task: plain")
    assert reply.tool_calls[0]["args"] == {"title": "plain"}
    assert server.requests[-1]["body"].get("stream") in (None, False)


def test_a_server_error_propagates_from_the_turn(server):
    model = make_openai_model(config(server), ENV)
    with pytest.raises(openai.InternalServerError):
        turn(model, empty_session_state(), "explode")


def test_key_comes_from_the_named_variable_only():
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        make_openai_model(OpenAIConfig(), {})
    local = make_openai_model(OpenAIConfig(base_url="http://127.0.0.1:9/v1"), {})
    assert local.openai_api_key.get_secret_value() == "not-needed"
    assert isinstance(make_model(EngineConfig(), {}), OfflineChatModel)


def test_the_log_names_the_endpoint_without_credentials(caplog):
    with caplog.at_level("INFO", logger="isotope.agent"):
        make_openai_model(OpenAIConfig(base_url="https://me:s3cret@llm.example:8443/v1"), {})
    assert "https://llm.example:8443/v1" in caplog.text and "s3cret" not in caplog.text
