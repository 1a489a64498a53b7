"""The spool record's on-disk format: records written by earlier code read, and replay, unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from app.core.postgres_session_manager import SessionManager
from app.store.outage.record import FORMAT, DeleteRecord, SaveRecord, SpoolRecord, UnreadableRecord
from tests.helpers import make_settings

# A save and a delete exactly as the code before the typed record wrote them (no "format" key).
TODAYS_SAVE = {
    "kind": "save", "write_id": "5b0f2a8e-2d4c-4a59-9f51-1d0c1b1e7a01", "session_id": "kept",
    "acked_at": "2026-12-01T21:00:00.000001+00:00", "prev": None, "base_version": None, "prev_count": None,
    "base_count": 0, "rewrite": False, "full": True,
    "texts": ['{"$iso":"msg","type":"human","content":"hello"}', '{"$iso":"msg","type":"ai","content":"hi"}'],
    "session_data": '{"messages":{"$iso":"messages","count":2,"bytes":90},"tasks":[]}',
    "members_upsert": {}, "members_delete": [], "members_full": True, "metadata": '{"user":"u1"}',
    "created_at": "2026-12-01T21:00:00.000001+00:00", "expires_at": None, "uncertain": False,
}
TODAYS_DELETE = {"kind": "delete", "soft": True, "write_id": "0d5e3c1a-7f2b-4e8d-9c6a-2b4f1e3d5a07",
                 "session_id": "gone", "acked_at": "2026-12-01T21:00:01+00:00"}


def test_todays_records_read_as_format_1() -> None:
    save = SpoolRecord.parse(TODAYS_SAVE)
    assert isinstance(save, SaveRecord) and save.format == FORMAT == 1
    assert save.session_id == "kept" and save.full and save.texts == TODAYS_SAVE["texts"] and save.prev_count is None
    delete = SpoolRecord.parse(TODAYS_DELETE)
    assert isinstance(delete, DeleteRecord) and delete.soft and delete.session_id == "gone"
    # What this code writes is what it reads, with the format stated.
    assert SpoolRecord.parse(save.to_json()) == save and save.to_json()["format"] == 1
    assert {k: v for k, v in save.to_json().items() if k != "format"} == TODAYS_SAVE


@pytest.mark.parametrize("damage", [
    {"format": 2}, {"texts": "not a list"}, {"base_count": "3"}, {"kind": "save", "session_data": None},
])
def test_a_record_that_is_not_one_is_unreadable(damage: dict) -> None:
    with pytest.raises(UnreadableRecord, match="not an outage-spool record"):
        SpoolRecord.parse({**TODAYS_SAVE, **damage}, "x.json")


def test_a_record_in_todays_format_replays_into_postgres(database_url: str, data_dir: Path) -> None:
    settings = make_settings(database_url, data_dir, **{"store.spool_replay_interval_s": 600})
    with SessionManager(settings, use_postgres=True) as manager:
        manager.save_session("gone", {"messages": [HumanMessage("bye")]})
        for n, record in enumerate((TODAYS_SAVE, TODAYS_DELETE)):
            name = f"{n + 1:020d}-x-1-{n:06d}.json"  # replay orders by name; the key part is not read
            (data_dir / "spool" / name).write_text(json.dumps(record), encoding="utf-8")
        manager.store.replayer.step()
        assert manager.status()["spool_depth"] == 0 and manager.status()["last_replay"]["replayed"] == 2
        stored = manager.load("kept")
        assert stored is not None and stored.backend == "postgres" and stored.metadata == {"user": "u1"}
        assert stored.data == {"messages": [HumanMessage("hello"), AIMessage("hi")], "tasks": []}
        assert manager.load_session("gone") is None
