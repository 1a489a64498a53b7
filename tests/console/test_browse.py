"""The console's reads on real PostgreSQL: search over names, user ids and message text (English
and Chinese), deleted sessions, restore, housekeeping figures; and the file store's answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from app.config import Settings
from app.core import browse as core_browse
from app.core.postgres_session_manager import SessionManager
from app.store.base import StoredSession
from app.store.postgres import browse


def _save(manager: SessionManager, sid: str, texts: list[str], **metadata: str) -> None:
    messages = [HumanMessage(t) if i % 2 == 0 else AIMessage(t) for i, t in enumerate(texts)]
    manager.save_session(sid, {"messages": messages, "tasks": [], "files": {}}, metadata=dict(metadata))


def _ids(found: dict) -> list[str]:
    return [s["session_id"] for s in found["sessions"]]


def test_text_query_turns_cjk_runs_into_phrases() -> None:
    assert browse.text_query("water the plants") == "water the plants"
    assert browse.text_query("浇水") == '"浇 水"'
    assert browse.text_query("请给植物浇水 water") == '"请 给 植 物 浇 水" water'
    assert browse.text_query('"浇水 now" -dry') == '"浇 水 now" -dry'
    assert browse.text_query("iPhone手机") == '"iPhone 手 机"'
    assert browse.text_query("%%% ???") is None


def test_search_finds_an_english_word_and_a_chinese_phrase(manager: SessionManager) -> None:
    _save(manager, "garden", ["add task: water the plants", "Added task #1: water the plants"], name="Garden")
    _save(manager, "chinese", ["请给植物浇水", "好的，我会给植物浇水"], name="新会话", user_id="user123")
    _save(manager, "scattered", ["水很冷", "我浇了花"], name="other")  # 浇 and 水, never together
    _save(manager, "unrelated", ["hello", "hi there"], name="plain")

    assert _ids(core_browse.find_sessions(manager, "plants", 50, 0, False)) == ["garden"]
    assert _ids(core_browse.find_sessions(manager, "PLANTS", 50, 0, False)) == ["garden"]
    assert _ids(core_browse.find_sessions(manager, "浇水", 50, 0, False)) == ["chinese"]
    assert _ids(core_browse.find_sessions(manager, "给植物浇水", 50, 0, False)) == ["chinese"]
    assert set(_ids(core_browse.find_sessions(manager, "水", 50, 0, False))) == {"chinese", "scattered"}
    assert _ids(core_browse.find_sessions(manager, '"water the plants"', 50, 0, False)) == ["garden"]
    assert _ids(core_browse.find_sessions(manager, '"plants the water"', 50, 0, False)) == []
    found = core_browse.find_sessions(manager, "water", 50, 0, False)
    assert found["messages_searched"] is True and found["sessions"][0]["matched_messages"] is True


def test_search_matches_names_user_ids_and_ids_as_substrings(manager: SessionManager) -> None:
    _save(manager, "alpha-1", ["nothing"], name="Quarterly report", user_id="alice")
    _save(manager, "beta-2", ["nothing"], name="新会话", user_id="bob_smith")
    assert _ids(core_browse.find_sessions(manager, "QUARTER", 50, 0, False)) == ["alpha-1"]
    assert _ids(core_browse.find_sessions(manager, "会话", 50, 0, False)) == ["beta-2"]
    assert _ids(core_browse.find_sessions(manager, "bob_", 50, 0, False)) == ["beta-2"]
    assert _ids(core_browse.find_sessions(manager, "ha-1", 50, 0, False)) == ["alpha-1"]
    # Pattern characters are taken literally.
    assert _ids(core_browse.find_sessions(manager, "%", 50, 0, False)) == []
    assert _ids(core_browse.find_sessions(manager, "b_b", 50, 0, False)) == []
    found = core_browse.find_sessions(manager, "alice", 50, 0, False)
    assert found["sessions"][0]["matched_messages"] is False


def test_search_pages_newest_first_and_deleted_only_when_asked(manager: SessionManager) -> None:
    for i in range(5):
        _save(manager, f"s{i}", [f"common word {i}"])
    manager.delete_session("s1")
    first = core_browse.find_sessions(manager, "common", 2, 0, False)
    assert _ids(first) == ["s4", "s3"] and first["has_more"] is True
    rest = core_browse.find_sessions(manager, "common", 2, 2, False)
    assert _ids(rest) == ["s2", "s0"] and rest["has_more"] is False
    everything = core_browse.find_sessions(manager, "common", 50, 0, True)
    assert _ids(everything) == ["s4", "s3", "s2", "s1", "s0"]
    assert [s["is_active"] for s in everything["sessions"]] == [True, True, True, False, True]
    plain = core_browse.find_sessions(manager, "", 2, 0, False)
    assert plain["total"] == 4 and _ids(plain) == ["s4", "s3"] and plain["has_more"]


def test_search_uses_the_index(manager: SessionManager, database_url: str) -> None:
    _save(manager, "one", ["water the plants"])
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN " + browse.SEARCH_ACTIVE.replace("%(text)s", "'water'").replace("%(needle)s", "'water'")
            .replace("%(limit)s", "50").replace("%(offset)s", "0")))
    assert "idx_isotope_messages_text" in plan


def test_text_of_list_contents_and_tool_results_is_searched(manager: SessionManager) -> None:
    messages = [HumanMessage(content=[{"type": "text", "text": "photosynthesis question"}]),
                AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "c1"}]),
                ToolMessage("chlorophyll absorbs light", tool_call_id="c1", name="lookup")]
    manager.save_session("lists", {"messages": messages}, metadata={})
    assert _ids(core_browse.find_sessions(manager, "photosynthesis", 50, 0, False)) == ["lists"]
    assert _ids(core_browse.find_sessions(manager, "chlorophyll", 50, 0, False)) == ["lists"]


def test_a_very_long_message_saves_and_its_beginning_is_searchable(manager: SessionManager) -> None:
    # Distinct words past the tsvector's 1 MB limit if all were indexed: the index takes the
    # first 50,000 characters, and the save must not fail because of the index.
    long_text = "needle " + " ".join(f"w{i:07d}" for i in range(120_000))
    _save(manager, "long", [long_text, "ok"])
    stored = manager.load("long")
    assert stored is not None and stored.data["messages"][0].content == long_text
    assert _ids(core_browse.find_sessions(manager, "needle", 50, 0, False)) == ["long"]


def test_deleted_and_expired_sessions_can_be_read_and_restored(manager: SessionManager, database_url: str) -> None:
    _save(manager, "gone", ["<script>alert(1)</script>", "reply"], name="<b>x</b>")
    manager.delete_session("gone")
    assert manager.load("gone") is None
    found = core_browse.any_session(manager, "gone")
    assert isinstance(found, StoredSession) and found.is_active is False
    assert found.data["messages"][0].content == "<script>alert(1)</script>"
    assert found.metadata == {"name": "<b>x</b>"}

    assert core_browse.restore(manager, "gone") is True
    stored = manager.load("gone")
    assert stored is not None and stored.message_count == 2

    _save(manager, "expired", ["old"])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE isotope_sessions SET expires_at = now() - interval '1 hour' WHERE session_id = 'expired'")
    assert manager.load("expired") is None
    assert core_browse.restore(manager, "expired") is True
    restored = manager.load("expired")
    assert restored is not None and restored.expires_at is None

    assert core_browse.restore(manager, "never-existed") is False
    assert core_browse.any_session(manager, "never-existed") is None


def test_housekeeping_counts_deleted_expired_and_growth(manager: SessionManager, database_url: str) -> None:
    for sid in ("a", "b", "c", "d"):
        _save(manager, sid, ["x"])
    manager.delete_session("a")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE isotope_sessions SET expires_at = now() - interval '1 minute' WHERE session_id = 'b'")
        conn.execute("UPDATE isotope_sessions SET expires_at = now() + interval '2 hours' WHERE session_id = 'c'")
        conn.execute("UPDATE isotope_sessions SET created_at = now() - interval '3 days' WHERE session_id = 'd'")
    assert manager.pg is not None
    figures = browse.housekeeping(manager.pg)
    today = datetime.now(UTC).date()
    assert figures["deleted_sessions"] == 1
    assert figures["expired_awaiting_cleanup"] == 1
    assert figures["expiring_within_24h"] == 1
    per_day = {d["day"]: d["sessions"] for d in figures["created_per_day"]}
    assert per_day == {today.isoformat(): 3, (today - timedelta(days=3)).isoformat(): 1}


def test_overview_reports_the_turn_rate_and_the_store(manager: SessionManager) -> None:
    from app import metrics

    rate = core_browse.TurnRate(window_s=60)
    metrics.TURNS.labels("done").inc(3)
    out = core_browse.overview(manager, rate)
    assert out["turns"]["in_window"] == 3 and out["turns"]["per_minute"] > 0
    assert out["store"] == {"backend": "postgres", "fallback_active": False, "spool_depth": 0, "down_since": None}
    assert out["housekeeping"]["deleted_sessions"] == 0
    assert out["statistics"]["total_sessions"] == 0


@pytest.mark.parametrize("use_postgres", [False])
def test_the_file_store_searches_names_and_refuses_restore(settings: Settings, use_postgres: bool) -> None:
    with SessionManager(settings, use_postgres=use_postgres) as files:
        _save(files, "f1", ["water the plants"], name="Garden", user_id="alice")
        _save(files, "f2", ["nothing"], name="Other")
        found = core_browse.find_sessions(files, "gard", 50, 0, False)
        assert _ids(found) == ["f1"] and found["messages_searched"] is False
        assert _ids(core_browse.find_sessions(files, "ALICE", 50, 0, False)) == ["f1"]
        files.delete_session("f2")
        info = core_browse.any_session(files, "f2")
        assert info is not None and not isinstance(info, StoredSession) and info["is_active"] is False
        with pytest.raises(Exception, match="needs the PostgreSQL store"):
            core_browse.restore(files, "f2")
