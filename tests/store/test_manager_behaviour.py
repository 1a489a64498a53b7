"""The manager's contract, run once over PostgreSQL and once over the file store."""

from __future__ import annotations

import datetime as dt

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from app.core.postgres_session_manager import SessionManager
from app.errors import InvalidInput

INFO_KEYS = {"session_id", "metadata", "created_at", "last_updated", "expires_at", "version", "is_active",
             "message_count"}


def state(*texts: str) -> dict:
    messages = [HumanMessage(t) if i % 2 == 0 else AIMessage(t) for i, t in enumerate(texts)]
    return {"messages": messages, "tasks": [{"id": 1, "title": "t"}], "files": {"a.txt": "x"},
            "metadata": {"k": "v"}}


def test_save_then_load_returns_equal_state(any_manager: SessionManager) -> None:
    data = state("hello", "hi there")
    data["messages"].append(AIMessage("", tool_calls=[{"name": "add_task", "args": {"title": "x"}, "id": "c1"}]))
    data["messages"].append(ToolMessage("done", tool_call_id="c1"))
    assert any_manager.save_session("s1", data, metadata={"name": "我的会话", "user_id": "user123"}) is True
    assert any_manager.load_session("s1") == data


def test_version_starts_at_one_and_grows_by_one_per_save(any_manager: SessionManager) -> None:
    data = state("a")
    any_manager.save_session("s", data)
    first = any_manager.session_info("s")
    for n in range(2, 5):
        data["messages"].append(HumanMessage(f"m{n}"))
        any_manager.save_session("s", data)
        info = any_manager.session_info("s")
        assert info["version"] == n
        assert info["created_at"] == first["created_at"]
        assert info["last_updated"] >= first["last_updated"]
    assert first["version"] == 1


def test_metadata_replaced_when_given_and_kept_when_none(any_manager: SessionManager) -> None:
    any_manager.save_session("s", state("a"), metadata={"name": "one"})
    any_manager.save_session("s", state("a", "b"))
    assert any_manager.session_info("s")["metadata"] == {"name": "one"}
    any_manager.save_session("s", state("a", "b"), metadata={"user": "u"})
    assert any_manager.session_info("s")["metadata"] == {"user": "u"}


def test_expiry_set_kept_and_expired_sessions_are_invisible(any_manager: SessionManager) -> None:
    any_manager.save_session("s", state("a"), expires_in_hours=24)
    info = any_manager.session_info("s")
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(hours=24)
    assert abs((info["expires_at"] - expected).total_seconds()) < 60
    any_manager.save_session("s", state("a", "b"))  # None keeps the expiry
    assert any_manager.session_info("s")["expires_at"] == info["expires_at"]
    any_manager.save_session("gone", state("a"), expires_in_hours=0)
    assert any_manager.load_session("gone") is None
    assert [i["session_id"] for i in any_manager.list_sessions()] == ["s"]
    listed = {i["session_id"]: i for i in any_manager.list_sessions(include_inactive=True)}
    assert listed["gone"]["is_active"] is False


def test_list_sessions_shape_and_order(any_manager: SessionManager) -> None:
    for n in range(3):
        any_manager.save_session(f"s{n}", state(*[f"m{i}" for i in range(n + 1)]), metadata={"n": n})
    any_manager.save_session("s0", state("m0", "again"))
    listed = any_manager.list_sessions(limit=10)
    assert [i["session_id"] for i in listed] == ["s0", "s2", "s1"]
    assert all(set(i) == INFO_KEYS for i in listed)
    assert all(i["last_updated"].tzinfo is not None and i["created_at"].tzinfo is not None for i in listed)
    assert {i["session_id"]: i["message_count"] for i in listed} == {"s0": 2, "s1": 2, "s2": 3}
    assert [i["session_id"] for i in any_manager.list_sessions(limit=1, offset=1)] == ["s2"]


def test_soft_and_hard_delete(any_manager: SessionManager) -> None:
    any_manager.save_session("soft", state("a"))
    any_manager.save_session("hard", state("a"))
    assert any_manager.delete_session("soft") is True
    assert any_manager.load_session("soft") is None
    assert any_manager.session_info("soft", include_inactive=True)["is_active"] is False
    assert any_manager.delete_session("hard", soft_delete=False) is True
    assert any_manager.session_info("hard", include_inactive=True) is None
    assert any_manager.delete_session("unknown") is False
    assert any_manager.delete_session("hard", soft_delete=False) is False


def test_statistics(any_manager: SessionManager) -> None:
    any_manager.save_session("a", state("1", "2", "3", "4"))
    any_manager.save_session("b", state("1", "2"))
    any_manager.save_session("c", state("1"), expires_in_hours=0)
    any_manager.save_session("d", state("1"))
    any_manager.delete_session("d")
    stats = any_manager.get_session_statistics()
    assert stats["total_sessions"] == 4
    assert stats["active_sessions"] == 2
    assert stats["inactive_sessions"] == 2
    assert stats["expired_sessions"] == 1
    assert stats["total_messages"] == 8
    assert stats["avg_messages_per_session"] == 3.0
    assert stats["sessions_last_24h"] == 4
    assert stats["oldest_session"] <= stats["newest_session"]
    assert stats["storage_bytes"] > 0


def test_cleanup_expired_soft_then_hard(any_manager: SessionManager) -> None:
    any_manager.save_session("old", state("a"), expires_in_hours=0)
    any_manager.save_session("fresh", state("a"), expires_in_hours=5)
    any_manager.save_session("forever", state("a"))
    assert any_manager.cleanup_expired_sessions() == 1
    assert any_manager.cleanup_expired_sessions() == 0
    assert any_manager.session_info("old", include_inactive=True)["is_active"] is False
    assert any_manager.cleanup_expired_sessions(hard_delete=True) == 1
    assert any_manager.session_info("old", include_inactive=True) is None
    assert {i["session_id"] for i in any_manager.list_sessions()} == {"fresh", "forever"}


def test_restore_all_sessions_loads_every_active_one(any_manager: SessionManager) -> None:
    for n in range(3):
        any_manager.save_session(f"s{n}", state("x"))
    any_manager.delete_session("s1")
    result = any_manager.restore_all_sessions(include_data=True)
    assert result["restored_count"] == 2 and result["failed_count"] == 0
    assert result["failed_session_ids"] == [] and result["errors"] == []
    assert set(result["sessions"]) == {"s0", "s2"}
    assert result["duration_s"] >= 0


def test_history_rewrites_store_exactly_the_new_list(any_manager: SessionManager) -> None:
    data = state("a", "b", "c", "d")
    any_manager.save_session("s", data)
    data["messages"] = data["messages"][:2]                         # trimmed
    any_manager.save_session("s", data)
    assert any_manager.load_session("s") == data
    data["messages"][1] = AIMessage("edited")                       # replaced in place
    any_manager.save_session("s", data)
    assert any_manager.load_session("s")["messages"][1].content == "edited"
    data["messages"][0].content = "mutated"                         # mutated in place
    any_manager.save_session("s", data)
    assert any_manager.load_session("s") == data
    data["messages"] = [HumanMessage("brand new")]                 # replaced wholesale
    any_manager.save_session("s", data)
    assert any_manager.load_session("s") == data


def test_members_added_changed_and_removed(any_manager: SessionManager) -> None:
    data = state("a")
    any_manager.save_session("s", data)
    data["files"]["big.txt"] = "x" * 50_000
    data["extra"] = {"k": [1, 2, 3]}
    any_manager.save_session("s", data)
    assert any_manager.load_session("s") == data
    data["files"]["big.txt"] += "y"
    del data["extra"]
    any_manager.save_session("s", data)
    assert any_manager.load_session("s") == data
    del data["messages"]
    any_manager.save_session("s", data)
    loaded = any_manager.load_session("s")
    assert loaded == data and "messages" not in loaded


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", {}), "session_id"),
        (("x" * 256, {}), "session_id"),
        ((None, {}), "session_id"),
        (("s", []), "session_data"),
        (("s", "text"), "session_data"),
        (("s", {1: "a"}), "session_data"),
        (("s", {}, ["not", "a", "dict"]), "metadata"),
        (("s", {}, None, -1), "expires_in_hours"),
        (("s", {}, None, "24"), "expires_in_hours"),
        (("s", {}, None, float("nan")), "expires_in_hours"),
        (("s", {}, None, True), "expires_in_hours"),
        (("a\x00b", {}), "session_id"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(any_manager: SessionManager, args: tuple, field: str) -> None:
    any_manager.save_session("s", state("original"), metadata={"m": 1})
    before = any_manager.session_info("s")
    with pytest.raises(InvalidInput) as caught:
        any_manager.save_session(*args)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field.startswith(field) and field in str(caught.value)
    assert any_manager.session_info("s") == before
    assert any_manager.load_session("s") == state("original")
    assert len(any_manager.list_sessions(include_inactive=True)) == 1


def test_unserialisable_members_are_skipped_with_one_warning(any_manager: SessionManager, caplog) -> None:
    import threading

    data = {"messages": [...], "metadata": {...}, "files": {}, "tasks": [],
            "runtime": {"lock": threading.Lock(), "keep": 1}}
    assert any_manager.save_session("guide", data, metadata={"name": "我的会话"}, expires_in_hours=24) is True
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "session_data.runtime.lock" in warnings[0].getMessage()
    loaded = any_manager.load_session("guide")
    assert loaded["runtime"] == {"keep": 1}
    assert loaded["messages"] == [...] and loaded["metadata"] == {...}


def test_an_unserialisable_member_is_skipped_at_every_depth(any_manager: SessionManager, caplog) -> None:
    import threading

    data = {**state("hi"), "lock": threading.Lock(), "nested": {"ok": 1, "lock2": threading.RLock()}}
    assert any_manager.save_session("locks", data) is True
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipped" in r.getMessage()]
    assert len(warnings) == 1
    assert "session_data.lock" in warnings[0] and "session_data.nested.lock2" in warnings[0]
    loaded = any_manager.load_session("locks")
    assert "lock" not in loaded and loaded["nested"] == {"ok": 1}
    assert loaded == {**state("hi"), "nested": {"ok": 1}}
    data["messages"].append(AIMessage("again"))  # the next save (a delta) keeps leaving it out
    assert any_manager.save_session("locks", data) is True
    assert any_manager.load_session("locks") == {**state("hi"), "nested": {"ok": 1}, "messages": data["messages"]}


def test_create_refuses_a_taken_id(any_manager: SessionManager) -> None:
    from app.errors import SessionExists

    result = any_manager.create("new", state("first"), metadata={"name": "n"})
    assert result.version == 1 and any_manager.load_session("new") == state("first")
    with pytest.raises(SessionExists) as caught:
        any_manager.create("new", state("second"))
    assert caught.value.field == "session_id" and "new" in str(caught.value)
    any_manager.delete_session("new")
    with pytest.raises(SessionExists):  # a deleted id stays taken
        any_manager.create("new", state("third"))
    assert any_manager.session_info("new", include_inactive=True)["version"] == 1


def test_hard_cleanup_with_an_age_keeps_recently_expired_sessions(any_manager: SessionManager) -> None:
    any_manager.save_session("expired-now", state("a"), expires_in_hours=0)
    any_manager.save_session("deleted-now", state("a"))
    any_manager.delete_session("deleted-now")
    any_manager.save_session("live", state("a"))
    assert any_manager.cleanup_expired_sessions(hard_delete=True, inactive_for_hours=1) == 0
    assert any_manager.cleanup_expired_sessions(hard_delete=True, inactive_for_hours=0) == 2
    assert [i["session_id"] for i in any_manager.list_sessions(include_inactive=True)] == ["live"]
