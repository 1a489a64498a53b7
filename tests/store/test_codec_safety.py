"""Stored data never names code to run: decoding resolves classes through a registry only.

Issue 13 item 1: a row whose metadata held ``{"$iso": "enum", "cls": "os:system", "v": "..."}`` ran
the command when the session was read. These tests store such values the way an attacker with
write access would (an UPDATE in PostgreSQL, an edited session file) and read them back through
the manager; each would create its marker file on a codec that imports names from data.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from app.core.postgres_session_manager import SessionManager
from app.store import codec

CODEC_LOGGER = "isotope.codec"


def hostile_values(marker: Path, module: str) -> dict[str, Any]:
    """Tagged values that run ``touch marker`` (or import ``module``) on an unsafe codec."""
    command = f"touch {marker}"
    return {
        "enum": {"$iso": "enum", "cls": "os:system", "v": command},
        "model": {"$iso": "model", "cls": "os:system", "v": command},
        "dc": {"$iso": "dc", "cls": "subprocess:getoutput", "v": {"cmd": command}},
        "import": {"$iso": "enum", "cls": f"{module}:Thing", "v": 1},
        "msg": {"$iso": "msg", "type": "human", "content": "hi", "cls": f"{module}:Thing"},
        "nested": [{"$iso": "enum", "cls": "os:system", "v": command}],
    }


@pytest.fixture
def trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A marker path, and an importable module that creates the marker when imported."""
    marker = tmp_path / "pwned"
    module = f"isotope_trap_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker, module


def assert_defused(value: dict[str, Any], marker: Path, module: str) -> None:
    assert not marker.exists(), "decoding ran code named by stored data"
    assert module not in sys.modules, "decoding imported a module named by stored data"
    assert value["enum"] == f"touch {marker}" and value["model"] == f"touch {marker}"
    assert value["dc"] == {"cmd": f"touch {marker}"} and value["import"] == 1
    assert value["msg"] == HumanMessage("hi") and type(value["msg"]) is HumanMessage
    assert value["nested"] == [f"touch {marker}"]


def codec_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == CODEC_LOGGER and r.levelno == logging.WARNING]


def test_decoding_imports_and_calls_nothing_named_by_the_data(trap: tuple[Path, str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    marker, module = trap
    text = json.dumps(hostile_values(marker, module))
    with caplog.at_level(logging.WARNING, logger=CODEC_LOGGER):
        assert_defused(codec.loads(text), marker, module)
        assert_defused(codec.loads(text), marker, module)
    warnings = codec_warnings(caplog)
    # one warning per unknown name, not one per value or per load
    assert len(warnings) == 3, warnings
    assert all("not registered" in w and "codec.register" in w for w in warnings)
    assert any("'os:system'" in w for w in warnings)


class Mood(enum.Enum):
    HAPPY = "happy"


@dataclasses.dataclass
class Card:
    title: str


class Profile(BaseModel):
    name: str


def test_unregistered_classes_save_and_load_as_plain_data_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    value = {"mood": Mood.HAPPY, "card": Card("c"), "profile": Profile(name="p")}
    with caplog.at_level(logging.WARNING, logger=CODEC_LOGGER):
        text = codec.dumps(codec.encode(value, "v").value)
        codec.dumps(codec.encode(value, "v").value)
        assert codec.loads(text) == {"mood": "happy", "card": {"title": "c"}, "profile": {"name": "p"}}
    warnings = codec_warnings(caplog)
    for cls in (Mood, Card, Profile):
        assert sum(cls.__qualname__ in w for w in warnings) == 1, warnings  # saved twice, loaded: one


def test_registered_classes_load_as_themselves_and_only_as_their_kind() -> None:
    @codec.register
    class Level(enum.Enum):
        LOW = 1

    @codec.register
    @dataclasses.dataclass
    class Note:
        text: str

    back = codec.loads(codec.dumps(codec.encode({"level": Level.LOW, "note": Note("n")}, "v").value))
    assert back == {"level": Level.LOW, "note": Note("n")}
    note_path = f"{Note.__module__}:{Note.__qualname__}"
    # a registered dataclass named by an enum tag is not called as an enum
    assert codec.loads(json.dumps({"$iso": "enum", "cls": note_path, "v": "x"})) == "x"
    with pytest.raises(TypeError, match="register"):
        codec.register(dict)  # type: ignore[arg-type]


def _plant_in_postgres(database_url: str, session_id: str, hostile: dict[str, Any]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE isotope_sessions SET metadata = %s::jsonb, "
                     "session_data = jsonb_set(session_data, '{hostile}', %s::jsonb) WHERE session_id = %s",
                     (json.dumps({"hostile": hostile}), json.dumps(hostile), session_id))


def test_a_hostile_row_in_postgresql_runs_nothing(manager: SessionManager, database_url: str,
                                                   trap: tuple[Path, str]) -> None:
    marker, module = trap
    manager.save_session("victim", {"messages": [HumanMessage("hello")]}, metadata={"name": "v"})
    _plant_in_postgres(database_url, "victim", hostile_values(marker, module))

    data = manager.load_session("victim")
    assert data is not None
    assert_defused(data["hostile"], marker, module)
    assert data["messages"] == [HumanMessage("hello")]
    restored = manager.restore_all_sessions(include_data=True)
    assert restored["restored_count"] >= 1
    info = manager.list_sessions()[0]
    assert_defused(info["metadata"]["hostile"], marker, module)


def test_a_hostile_session_file_runs_nothing(settings: Any, trap: tuple[Path, str]) -> None:
    marker, module = trap
    with SessionManager(settings, use_postgres=False) as files:
        files.save_session("victim", {"tasks": []})
        (path,) = (settings.data_dir / "sessions").glob("*.json")
        doc = json.loads(path.read_text())
        doc["data"] = dict(doc.get("data") or {}, hostile=hostile_values(marker, module))
        path.write_text(json.dumps(doc))
        data = files.load_session("victim")
    assert data is not None
    assert_defused(data["hostile"], marker, module)
