"""IsotopeSessionService against ADK's session-service contract, ported.

The cases are those of adk-python's ``tests/unittests/sessions/test_session_service.py`` (and its
``_conformance.py`` registry) that take the shared ``session_service`` fixture, i.e. the behaviour
every ``BaseSessionService`` owes its callers, plus the stale-session cases ADK runs against its
persistent database service. Tests of SQLAlchemy internals (engines, rollbacks, table creation)
have no counterpart here. Coroutines run with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import GetSessionConfig
from google.genai import types

from app.adapters.adk import IsotopeSessionService
from app.core.postgres_session_manager import SessionManager

T = TypeVar("T")
APP = "my_app"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def service(manager: SessionManager) -> Iterator[IsotopeSessionService]:
    yield IsotopeSessionService(manager)


def _delta(**state: object) -> EventActions:
    return EventActions(state_delta=dict(state))


def test_get_empty_session(service: IsotopeSessionService) -> None:
    assert run(service.get_session(app_name=APP, user_id="test_user", session_id="123")) is None


def test_create_get_delete_session(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="test_user", state={"key": "value"}))
    assert (session.app_name, session.user_id, session.state) == (APP, "test_user", {"key": "value"})
    assert session.id and session.last_update_time <= datetime.now(UTC).timestamp()
    got = run(service.get_session(app_name=APP, user_id="test_user", session_id=session.id))
    assert got == session
    run(service.delete_session(app_name=APP, user_id="test_user", session_id=session.id))
    assert run(service.get_session(app_name=APP, user_id="test_user", session_id=session.id)) is None


def test_create_and_list_sessions(service: IsotopeSessionService) -> None:
    ids = [f"session{i}" for i in range(5)]
    for sid in ids:
        run(service.create_session(app_name=APP, user_id="test_user", session_id=sid, state={"key": "value" + sid}))
    sessions = run(service.list_sessions(app_name=APP, user_id="test_user")).sessions
    assert {s.id for s in sessions} == set(ids)
    assert all(s.state == {"key": "value" + s.id} for s in sessions)
    assert all(not s.events for s in sessions)


def test_list_sessions_of_one_user_and_of_all_users(service: IsotopeSessionService) -> None:
    for user, sid in (("user1", "session1a"), ("user1", "session1b"), ("user2", "session2a")):
        run(service.create_session(app_name=APP, user_id=user, session_id=sid, state={"key": "value" + sid[-2:]}))
    one = {s.id: s.state for s in run(service.list_sessions(app_name=APP, user_id="user1")).sessions}
    assert one == {"session1a": {"key": "value1a"}, "session1b": {"key": "value1b"}}
    two = run(service.list_sessions(app_name=APP, user_id="user2")).sessions
    assert [(s.id, s.state) for s in two] == [("session2a", {"key": "value2a"})]
    everyone = {s.id: s.state for s in run(service.list_sessions(app_name=APP, user_id=None)).sessions}
    assert everyone == {"session1a": {"key": "value1a"}, "session1b": {"key": "value1b"},
                        "session2a": {"key": "value2a"}}
    assert run(service.list_sessions(app_name="other_app", user_id=None)).sessions == []


def test_list_sessions_ordered_by_last_update_time(service: IsotopeSessionService) -> None:
    first = run(service.create_session(app_name=APP, user_id="u", session_id="first"))
    run(service.create_session(app_name=APP, user_id="u", session_id="second"))
    run(service.append_event(first, Event(author="user", timestamp=first.last_update_time + 100)))
    assert [s.id for s in run(service.list_sessions(app_name=APP, user_id="u")).sessions] == ["second", "first"]


def test_app_state_is_shared_by_all_users_of_app(service: IsotopeSessionService) -> None:
    s1 = run(service.create_session(app_name=APP, user_id="u1", session_id="s1", state={"app:k1": "v1"}))
    run(service.append_event(s1, Event(invocation_id="inv1", author="user", actions=_delta(**{"app:k2": "v2"}))))
    s2 = run(service.create_session(app_name=APP, user_id="u2", session_id="s2"))
    assert s2.state == {"app:k1": "v1", "app:k2": "v2"}
    again = run(service.get_session(app_name=APP, user_id="u1", session_id="s1"))
    assert again is not None and again.state["app:k1"] == "v1" and again.state["app:k2"] == "v2"


def test_user_state_is_shared_only_by_user_sessions(service: IsotopeSessionService) -> None:
    s1 = run(service.create_session(app_name=APP, user_id="u1", session_id="s1", state={"user:k1": "v1"}))
    run(service.append_event(s1, Event(invocation_id="inv1", author="user", actions=_delta(**{"user:k2": "v2"}))))
    s1b = run(service.create_session(app_name=APP, user_id="u1", session_id="s1b"))
    assert s1b.state == {"user:k1": "v1", "user:k2": "v2"}
    assert run(service.create_session(app_name=APP, user_id="u2", session_id="s2")).state == {}


def test_session_state_is_not_shared(service: IsotopeSessionService) -> None:
    s1 = run(service.create_session(app_name=APP, user_id="u1", session_id="s1", state={"sk1": "v1"}))
    run(service.append_event(s1, Event(invocation_id="inv1", author="user", actions=_delta(sk2="v2"))))
    got = run(service.get_session(app_name=APP, user_id="u1", session_id="s1"))
    assert got is not None and got.state == {"sk1": "v1", "sk2": "v2"}
    assert run(service.create_session(app_name=APP, user_id="u1", session_id="s1b")).state == {}


def test_temp_state_is_not_persisted_in_state_or_events(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="u1", session_id="s1"))
    event = Event(invocation_id="inv1", author="user", actions=_delta(**{"temp:k1": "v1", "sk": "v2"}))
    run(service.append_event(session, event))
    assert session.state.get("temp:k1") == "v1" and session.state.get("sk") == "v2"
    assert "temp:k1" not in event.actions.state_delta and event.actions.state_delta.get("sk") == "v2"
    stored = run(service.get_session(app_name=APP, user_id="u1", session_id="s1"))
    assert stored is not None and "temp:k1" not in stored.state
    assert "temp:k1" not in stored.events[0].actions.state_delta


def test_temp_state_visible_across_sequential_events(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="u1", session_id="s_seq"))
    event = Event(invocation_id="inv1", author="agent1", actions=_delta(**{"temp:output": "result_from_a1"}))
    run(service.append_event(session, event))
    assert session.state.get("temp:output") == "result_from_a1"
    assert "temp:output" not in event.actions.state_delta


def test_get_session_respects_user_id(service: IsotopeSessionService) -> None:
    s1 = run(service.create_session(app_name=APP, user_id="u1", session_id="s1"))
    run(service.append_event(s1, Event(invocation_id="inv1", author="user")))
    run(service.create_session(app_name=APP, user_id="u2", session_id="s1"))
    got = run(service.get_session(app_name=APP, user_id="u2", session_id="s1"))
    assert got is not None and got.user_id == "u2" and got.events == []


def test_create_session_with_existing_id_raises_error(service: IsotopeSessionService) -> None:
    run(service.create_session(app_name=APP, user_id="test_user", session_id="existing_session"))
    with pytest.raises(AlreadyExistsError):
        run(service.create_session(app_name=APP, user_id="test_user", session_id="existing_session"))


def test_padded_session_id_reads_and_deletes(service: IsotopeSessionService) -> None:
    run(service.create_session(app_name=APP, user_id="u", session_id="  padded  "))
    assert run(service.get_session(app_name=APP, user_id="u", session_id="padded")) is not None
    assert run(service.get_session(app_name=APP, user_id="u", session_id=" padded ")) is not None
    run(service.delete_session(app_name=APP, user_id="u", session_id=" padded"))
    assert run(service.get_session(app_name=APP, user_id="u", session_id="padded")) is None


def test_append_event_bytes(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="user"))
    content = types.Content(role="user", parts=[types.Part.from_bytes(data=b"test_image_data", mime_type="image/png")])
    grounding = types.GroundingMetadata(search_entry_point=types.SearchEntryPoint(sdk_blob=b"test_sdk_blob"))
    run(service.append_event(session, Event(invocation_id="invocation", author="user", content=content,
                                            grounding_metadata=grounding)))
    assert session.events[0].content == content
    got = run(service.get_session(app_name=APP, user_id="user", session_id=session.id))
    assert got is not None and len(got.events) == 1
    assert got.events[0].content == content and got.events[0].grounding_metadata == grounding


def test_append_event_complete(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="user"))
    event = Event(
        invocation_id="invocation", author="user",
        content=types.Content(role="user", parts=[types.Part(text="test_text")]),
        turn_complete=True, partial=False,
        actions=EventActions(artifact_delta={"file": 0}, transfer_to_agent="agent", escalate=True),
        long_running_tool_ids={"tool1"}, error_code="error_code", error_message="error_message", interrupted=True,
        grounding_metadata=types.GroundingMetadata(web_search_queries=["query1"]),
        usage_metadata=types.GenerateContentResponseUsageMetadata(prompt_token_count=1, candidates_token_count=1,
                                                                  total_token_count=2),
        citation_metadata=types.CitationMetadata(), custom_metadata={"custom_key": "custom_value"},
        timestamp=1700000000.123,
        input_transcription=types.Transcription(text="input transcription", finished=True),
        output_transcription=types.Transcription(text="output transcription", finished=True),
    )
    run(service.append_event(session, event))
    assert run(service.get_session(app_name=APP, user_id="user", session_id=session.id)) == session


def test_session_last_update_time_updates_on_event(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="user"))
    original = session.last_update_time
    run(service.append_event(session, Event(invocation_id="invocation", author="user", timestamp=original + 10)))
    assert session.last_update_time == pytest.approx(original + 10, abs=1e-6)
    refreshed = run(service.get_session(app_name=APP, user_id="user", session_id=session.id))
    assert refreshed is not None and refreshed.last_update_time == pytest.approx(original + 10, abs=1e-6)


def test_get_session_with_config(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="user"))
    for i in range(1, 6):
        run(service.append_event(session, Event(author="user", timestamp=i)))

    def events(config: GetSessionConfig | None) -> list[float]:
        got = run(service.get_session(app_name=APP, user_id="user", session_id=session.id, config=config))
        assert got is not None
        return [e.timestamp for e in got.events]

    assert events(None) == [1, 2, 3, 4, 5]
    assert events(GetSessionConfig(num_recent_events=0)) == []
    assert events(GetSessionConfig(num_recent_events=3)) == [3, 4, 5]
    assert events(GetSessionConfig(after_timestamp=4.0)) == [4, 5]
    assert events(GetSessionConfig(after_timestamp=50)) == []
    assert events(GetSessionConfig(after_timestamp=4.0, num_recent_events=3)) == [4, 5]


def test_partial_events_are_not_persisted(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="user"))
    run(service.append_event(session, Event(author="user", partial=True)))
    assert session.events == []
    got = run(service.get_session(app_name=APP, user_id="user", session_id=session.id))
    assert got is not None and got.events == []


def test_append_to_a_session_that_does_not_exist(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="user", session_id="gone"))
    run(service.delete_session(app_name=APP, user_id="user", session_id="gone"))
    with pytest.raises(SessionNotFoundError):
        run(service.append_event(session, Event(author="user")))


def test_append_event_to_stale_session(service: IsotopeSessionService) -> None:
    now = datetime.now(UTC).timestamp()
    original = run(service.create_session(app_name=APP, user_id="user"))
    run(service.append_event(original, Event(invocation_id="inv1", author="user", timestamp=now + 1,
                                             actions=_delta(sk1="v1"))))
    updated = run(service.get_session(app_name=APP, user_id="user", session_id=original.id))
    assert updated is not None
    run(service.append_event(updated, Event(invocation_id="inv2", author="user", timestamp=now + 2,
                                            actions=_delta(sk2="v2"))))
    assert original.last_update_time < updated.last_update_time and "sk2" not in original.state
    with pytest.raises(ValueError, match="stale"):
        run(service.append_event(original, Event(invocation_id="inv3", author="user", timestamp=now + 3,
                                                 actions=_delta(sk3="v3"))))
    final = run(service.get_session(app_name=APP, user_id="user", session_id=original.id))
    assert final is not None and [e.invocation_id for e in final.events] == ["inv1", "inv2"]
    assert final.state == {"sk1": "v1", "sk2": "v2"}


def test_concurrent_stale_sessions_reject_the_stale_writer(service: IsotopeSessionService) -> None:
    session = run(service.create_session(app_name=APP, user_id="user"))
    for i in range(4):
        latest = run(service.get_session(app_name=APP, user_id="user", session_id=session.id))
        assert latest is not None
        copies = [latest.model_copy(deep=True), latest.model_copy(deep=True)]
        base = latest.last_update_time + 10.0
        events = [Event(invocation_id=f"inv{i}-{n}", author="user", timestamp=base + n,
                        actions=_delta(**{f"sk{i}-{n}": f"v{i}-{n}"})) for n in (1, 2)]

        async def both(pairs: list[tuple[object, Event]]) -> list[object]:
            return list(await asyncio.gather(*(service.append_event(s, e) for s, e in pairs),  # type: ignore[arg-type]
                                             return_exceptions=True))

        results = run(both(list(zip(copies, events, strict=True))))
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 1 and isinstance(errors[0], ValueError)
    final = run(service.get_session(app_name=APP, user_id="user", session_id=session.id))
    assert final is not None and len(final.events) == 4


def test_get_user_state(service: IsotopeSessionService) -> None:
    assert run(service.get_user_state(app_name=APP, user_id="u1")) == {}
    session = run(service.create_session(app_name=APP, user_id="u1"))
    run(service.append_event(session, Event(author="system", actions=_delta(
        **{"user:profile": {"name": "Alice"}, "session_key": 1}))))
    assert run(service.get_user_state(app_name=APP, user_id="u1")) == {"profile": {"name": "Alice"}}
    assert run(service.get_user_state(app_name=APP, user_id="u2")) == {}
    assert run(service.get_user_state(app_name="other_app", user_id="u1")) == {}
    run(service.append_event(session, Event(author="system", actions=_delta(**{"user:counter": 1}))))
    run(service.append_event(session, Event(author="system", actions=_delta(**{"user:counter": 2}))))
    assert run(service.get_user_state(app_name=APP, user_id="u1"))["counter"] == 2


def test_names_with_separators_do_not_collide(service: IsotopeSessionService) -> None:
    run(service.create_session(app_name="a/b", user_id="c", session_id="d", state={"k": 1}))
    run(service.create_session(app_name="a", user_id="b/c", session_id="d", state={"k": 2}))
    one = run(service.get_session(app_name="a/b", user_id="c", session_id="d"))
    two = run(service.get_session(app_name="a", user_id="b/c", session_id="d"))
    assert one is not None and two is not None and (one.state, two.state) == ({"k": 1}, {"k": 2})


def test_an_adk_session_is_an_isotope_session(service: IsotopeSessionService, manager: SessionManager) -> None:
    session = run(service.create_session(app_name=APP, user_id="u1", session_id="s1"))
    for n in range(3):
        run(service.append_event(session, Event(author="user", content=types.Content(
            role="user", parts=[types.Part(text=f"turn {n}")]))))
    infos = {i["session_id"]: i for i in manager.list_sessions()}
    info = infos["adk/session/my_app/u1/s1"]
    assert info["message_count"] == 3 and info["metadata"]["framework"] == "adk"
