"""Export, import and fork through the manager, on real PostgreSQL: export -> import into an empty
database -> every session equal; bad lines named and not written; forks independent."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import math
import tracemalloc
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from app.core import transfer
from app.core.postgres_session_manager import SessionManager
from app.errors import InvalidInput, SessionExists, SessionNotFound
from app.store import codec
from app.store.transfer import Selection
from tests.helpers import make_settings
from tests.hostile.strategies import same, valid_saves
from tests.store.test_codec import MESSAGES, Box, Colour, Point

pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning")


@pytest.fixture
def target(empty_database_url: str, tmp_path: Path) -> Iterator[SessionManager]:
    """A manager on a database without even Isotope's schema: what an import starts from."""
    data_dir = tmp_path / "target"
    data_dir.mkdir()
    with SessionManager(make_settings(empty_database_url, data_dir), use_postgres=True) as mgr:
        yield mgr


def export_text(manager: SessionManager, selection: Selection | None = None) -> str:
    out = io.StringIO()
    transfer.export_sessions(manager, out, selection or Selection(include_inactive=True))
    return out.getvalue()


def import_text(manager: SessionManager, text: str, on_conflict: str = "skip") -> transfer.ImportReport:
    return transfer.import_sessions(manager, io.BytesIO(text.encode("utf-8")), on_conflict)


def lines_by_id(text: str) -> dict[str, dict[str, Any]]:
    # Lines end at "\n" only: str.splitlines() would also cut at U+2028 and friends, which JSON
    # leaves unescaped inside strings.
    records = [codec.loads(line) for line in text.split("\n") if line]
    return {r["session_id"]: r for r in records}


def every_value() -> dict[str, Any]:
    """One of each kind of value the codec keeps."""
    return {
        "naive": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        "aware": dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        "date": dt.date(1999, 12, 31), "time": dt.time(1, 2, 3, 4), "td": dt.timedelta(days=-1, microseconds=7),
        "dec": Decimal("-1.10000000000000000000001"), "uuid": uuid.UUID(int=7), "set": {1, "a"},
        "fset": frozenset({2.5}), "tuple": (1, (2, [3])), "bytes": b"\x00\xff" * 3, "bytearray": bytearray(b"ab"),
        "floats": [math.inf, -math.inf, 1e16, -0.5, 5e-324, 1e300], "nul": "a\x00b", "surrogate": "x\ud800y",
        "map": {1: "int key", (1, 2): "tuple key", "$iso": "the tag itself", None: "none"},
        "model": Point(x=1, when=dt.datetime(2020, 1, 1)), "dc": Box("b", [1, 2]), "enum": Colour.RED,
        "path": Path("/tmp/x"), "complex": complex(1, -2), "ellipsis": ..., "big": 10**40, "empty": {},
    }


def seed(manager: SessionManager) -> dict[str, str]:
    """Sessions of every shape; returns their ids by role."""
    ids = {role: f"{role}-{uuid.uuid4().hex[:8]}" for role in
           ("full", "plain", "nomsgs", "notalist", "deleted", "expired", "large", "unicode")}
    tool_turn = [HumanMessage("add task: water the plants", id="h1"),
                 AIMessage("", id="a1", tool_calls=[{"id": "c1", "name": "add_task", "args": {"title": "water"}}]),
                 ToolMessage("Added task #1", tool_call_id="c1", name="add_task", id="t1"),
                 AIMessage("Added task #1: water the plants", id="a2")]
    manager.save_session(ids["full"], {
        "messages": [*MESSAGES, *tool_turn], "tasks": [{"id": 1, "title": "water", "done": False}],
        "files": {"notes.txt": "hello", "blob.bin": b"\x01" * 5000}, "values": every_value(),
    }, metadata={"name": "我的会话", "user_id": "user123", "when": dt.datetime(2024, 5, 5, tzinfo=dt.UTC)},
        expires_in_hours=24)
    manager.save_session(ids["plain"], {"messages": tool_turn, "tasks": [], "files": {}}, metadata={"user_id": "u2"})
    manager.save_session(ids["nomsgs"], {"tasks": [1, 2]})
    manager.save_session(ids["notalist"], {"messages": "not a list", "x": None})
    manager.save_session(ids["deleted"], {"messages": tool_turn[:1]}, metadata={"user_id": "user123"})
    manager.delete_session(ids["deleted"], soft_delete=True)
    manager.save_session(ids["expired"], {"messages": tool_turn[:2]}, expires_in_hours=0)
    manager.save_session(ids["large"], {"messages": [HumanMessage(f"m{i} " + "x" * 200) for i in range(1_300)]})
    manager.save_session(ids["unicode"], {"messages": [HumanMessage("\u202e\U0001d54f")]})
    manager.save_session(ids["plain"], {"messages": [*tool_turn, HumanMessage("again")], "tasks": [], "files": {}})
    return ids


def assert_same_sessions(source: SessionManager, copy: SessionManager, ids: list[str]) -> None:
    for sid in ids:
        a = source.session_info(sid, include_inactive=True)
        b = copy.session_info(sid, include_inactive=True)
        assert a is not None and b is not None, sid
        assert {**a, "metadata": None} == {**b, "metadata": None}, sid
        assert same(a["metadata"], b["metadata"]), sid
        if a["is_active"]:
            loaded_a, loaded_b = source.load(sid), copy.load(sid)
            assert loaded_a is not None and loaded_b is not None
            assert same(loaded_a.data, loaded_b.data), sid
    # Deleted and expired sessions cannot be loaded: their exports must agree instead.
    exported_a = lines_by_id(export_text(source, Selection(ids, include_inactive=True)))
    exported_b = lines_by_id(export_text(copy, Selection(ids, include_inactive=True)))
    assert set(exported_a) == set(exported_b) == set(ids)
    for sid in ids:
        assert same(exported_a[sid], exported_b[sid]), sid


def test_export_then_import_into_an_empty_database_gives_every_session_back(
        manager: SessionManager, target: SessionManager) -> None:
    ids = seed(manager)
    text = export_text(manager)
    assert text.count("\n") == len(ids) and text.endswith("\n")
    report = import_text(target, text)
    assert (report.imported, report.skipped, report.failed) == (len(ids), 0, 0)
    assert_same_sessions(manager, target, list(ids.values()))
    full = target.load(ids["full"])
    assert full is not None and full.data["values"]["nul"] == "a\x00b" and full.data["values"]["map"][(1, 2)]
    assert full.data["messages"][-3].tool_calls[0]["args"] == {"title": "water"}
    assert target.session_info(ids["plain"])["version"] == 2  # type: ignore[index]
    assert target.load_session(ids["notalist"]) == {"messages": "not a list", "x": None}


def test_export_lines_follow_the_documented_format(manager: SessionManager) -> None:
    ids = seed(manager)
    records = lines_by_id(export_text(manager))
    full = records[ids["full"]]
    assert list(full) == ["format", "format_version", "session_id", "version", "created_at", "last_updated",
                          "expires_at", "is_active", "metadata", "data", "messages"]
    assert (full["format"], full["format_version"]) == ("isotope.session", 1)
    assert dt.datetime.fromisoformat(full["expires_at"]) > dt.datetime.now(dt.UTC)
    assert "messages" not in records[ids["nomsgs"]] and records[ids["notalist"]]["data"]["messages"] == "not a list"
    assert records[ids["deleted"]]["is_active"] is False
    assert len(records[ids["large"]]["messages"]) == 1_300


def test_selection_by_id_user_and_activity(manager: SessionManager) -> None:
    ids = seed(manager)
    active = lines_by_id(export_text(manager, Selection()))
    assert ids["deleted"] not in active and ids["expired"] not in active and ids["full"] in active
    mine = lines_by_id(export_text(manager, Selection(user="user123", include_inactive=True)))
    assert set(mine) == {ids["full"], ids["deleted"]}
    out = io.StringIO()
    report = transfer.export_sessions(manager, out, Selection([ids["plain"], ids["deleted"], "nobody"]))
    assert report.exported == 1 and report.missing == ["nobody"] and report.filtered == [ids["deleted"]]


BAD_LINES = [
    ("{not json", "not valid JSON at column 2"),
    ("[1, 2]", "is a JSON list, not an object"),
    ('{"format": "langgraph", "format_version": 1}', "format: 'langgraph' is not 'isotope.session'"),
    ('{"format": "isotope.session", "format_version": 9, "session_id": "x", "data": {}}',
     "format_version 9 is newer than this Isotope reads (1)"),
    ('{"format": "isotope.session", "format_version": 1, "data": {}}', "session_id: missing"),
    ('{"format": "isotope.session", "format_version": 1, "session_id": "", "data": {}}', "session_id: must not be"),
    ('{"format": "isotope.session", "format_version": 1, "session_id": "b", "data": {}, "colour": 1}',
     "unknown key 'colour'"),
    ('{"format": "isotope.session", "format_version": 1, "session_id": "b", "data": {}, "version": 0}', "version:"),
    ('{"format": "isotope.session", "format_version": 1, "session_id": "b", "data": {}, '
     '"created_at": "2024-01-01T00:00:00"}', "created_at: '2024-01-01T00:00:00' has no UTC offset"),
    ('{"format": "isotope.session", "format_version": 1, "session_id": "b", "data": {}, "expires_at": "soon"}',
     "expires_at: 'soon' is not an ISO 8601 timestamp"),
    ('{"format": "isotope.session", "format_version": 1, "session_id": "b", "data": {"$x": 1}}',
     "top-level key '$x' is not allowed"),
    ('{"format": "isotope.session", "format_version": 1, "session_id": "b", "data": {}, "messages": ['
     '{"$iso": "msg", "type": "human", "content": "ok"}, {"$iso": "msg", "type": "robot", "content": "x"}]}',
     "messages[1]: unknown message type 'robot'"),
    ('{"format": "isotope.session", "format_version": 1, "session_id": "b", "data": {"tasks": [{"at": '
     '{"$iso": "dt", "v": "yesterday"}}]}}', "data.tasks[0].at: malformed 'dt' value"),
    ('{"format": "isotope.session", "format_version": 1, "session_id": "b", "data": {"messages": []}, '
     '"messages": []}', "messages: given twice"),
]


@pytest.mark.parametrize("line, reason", BAD_LINES, ids=[r for _, r in BAD_LINES])
def test_a_bad_line_is_named_and_nothing_of_it_is_written(
        manager: SessionManager, target: SessionManager, line: str, reason: str) -> None:
    ids = seed(manager)
    good = export_text(manager, Selection([ids["plain"], ids["full"]])).split("\n")
    report = import_text(target, "\n".join([good[0], line, good[1]]) + "\n")
    assert (report.imported, report.failed) == (2, 1)
    (where, why), = report.failures
    assert where == "line 2" and reason in why, why
    assert target.count_sessions(include_inactive=True) == 2
    assert not report.ok


def test_a_session_over_the_limits_is_refused_whole(manager: SessionManager, tmp_path: Path,
                                                     empty_database_url: str) -> None:
    sid = "big-" + uuid.uuid4().hex[:6]
    manager.save_session(sid, {"messages": [HumanMessage("y" * 5_000) for _ in range(20)]})
    (tmp_path / "small").mkdir()
    small = make_settings(empty_database_url, tmp_path / "small", **{"store.max_session_bytes": 50_000})
    with SessionManager(small, use_postgres=True) as limited:
        report = import_text(limited, export_text(manager))
        assert report.failed == 1 and "store.max_session_bytes" in report.failures[0][1]
        assert limited.count_sessions(include_inactive=True) == 0


def test_conflicts_skip_by_default_replace_or_take_a_new_id(manager: SessionManager, target: SessionManager) -> None:
    ids = seed(manager)
    text = export_text(manager, Selection([ids["plain"]]))
    target.save_session(ids["plain"], {"messages": [HumanMessage("mine")] * 3}, metadata={"keep": True})
    target.save_session(ids["plain"], {"messages": [HumanMessage("mine")] * 4}, metadata={"keep": True})
    target.save_session(ids["plain"], {"messages": [HumanMessage("mine")] * 5}, metadata={"keep": True})

    skipped = import_text(target, text)
    assert (skipped.imported, skipped.skipped, skipped.skipped_ids) == (0, 1, [ids["plain"]]) and skipped.ok
    assert target.load(ids["plain"]).metadata == {"keep": True}  # type: ignore[union-attr]

    renamed = import_text(target, text, "new-id")
    (original, new_id), = renamed.renamed
    assert original == ids["plain"] and new_id != original
    assert same(target.load(new_id).data, manager.load(ids["plain"]).data)  # type: ignore[union-attr]

    replaced = import_text(target, text, "replace")
    assert (replaced.imported, replaced.replaced) == (1, 1)
    stored = target.load(ids["plain"])
    assert stored is not None and same(stored.data, manager.load(ids["plain"]).data)  # type: ignore[union-attr]
    assert stored.version == 4  # past the replaced session's 3, so no process trusts a cached copy
    target.save_session(ids["plain"], {**stored.data, "messages": [*stored.data["messages"], HumanMessage("+1")]})
    assert len(target.load_session(ids["plain"])["messages"]) == 6  # type: ignore[index]


def test_replace_waits_for_no_turn(manager: SessionManager, target: SessionManager) -> None:
    ids = seed(manager)
    text = export_text(manager, Selection([ids["plain"]]))
    target.save_session(ids["plain"], {"messages": []})
    with target.lock(ids["plain"]):
        report = import_text(target, text, "replace")
    assert report.failed == 1 and "is in a turn" in report.failures[0][1]
    assert target.load_session(ids["plain"]) == {"messages": []}


def test_import_files_moves_the_file_store_once(manager: SessionManager, settings: Any, data_dir: Path) -> None:
    with SessionManager(settings, use_postgres=False) as files:
        files.save_session("f1", {"messages": [HumanMessage("from files")], "tasks": [Decimal("1.5")]},
                           metadata={"user_id": "u"}, expires_in_hours=10)
        files.save_session("f1", {"messages": [HumanMessage("from files"), AIMessage("ok")], "tasks": []})
        files.save_session("f2", {"tasks": []})
        files.delete_session("f2", soft_delete=True)
        before = {sid: files.session_info(sid, include_inactive=True) for sid in ("f1", "f2")}
        (data_dir / "sessions" / "broken.json").write_text("{torn")
    first = transfer.import_files(manager, data_dir)
    assert (first.imported, first.skipped, first.failed) == (2, 0, 1)
    assert first.failures[0][0] == "sessions/broken.json"
    for sid, info in before.items():
        assert manager.session_info(sid, include_inactive=True) == info
    assert manager.load_session("f1") == {"messages": [HumanMessage("from files"), AIMessage("ok")], "tasks": []}
    again = transfer.import_files(manager, data_dir)
    assert (again.imported, again.skipped) == (0, 2)
    assert len(list((data_dir / "sessions").glob("*.json"))) == 3  # originals left in place


def test_a_large_session_exports_in_bounded_memory(manager: SessionManager) -> None:
    sid = "long-" + uuid.uuid4().hex[:6]
    message = HumanMessage("z" * 1_000)
    manager.save_session(sid, {"messages": [message] * 20_000})  # ~21 MB encoded

    class Sink(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.size = 0
            self.opening = ""

        def write(self, text: str) -> int:
            if not self.opening:
                self.opening = text[:200]
            self.size += len(text)
            return len(text)

    sink = Sink()
    tracemalloc.start()
    try:
        transfer.export_sessions(manager, sink, Selection([sid]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size > 20_000_000
    assert peak < 4_000_000, f"peak {peak} bytes for a {sink.size}-character line"


# ---------------------------------------------------------------------------------------------
# Property: whatever a save accepts, export -> import gives back


_counter = itertools.count()


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(cases=st.lists(st.tuples(valid_saves, st.booleans()), min_size=1, max_size=3))
def test_any_saved_session_round_trips(manager: SessionManager, target: SessionManager,
                                       cases: list[tuple[Any, bool]]) -> None:
    ids = []
    n = next(_counter)
    for index, ((sid, data, metadata, hours), delete) in enumerate(cases):
        sid = f"p{n}.{index}:{sid}"[:255]
        manager.save_session(sid, data, metadata, hours)
        if delete:
            manager.delete_session(sid, soft_delete=True)
        ids.append(sid)
    report = import_text(target, export_text(manager, Selection(ids, include_inactive=True)))
    assert (report.imported, report.failed) == (len(ids), 0), report.failures
    assert_same_sessions(manager, target, ids)


# ---------------------------------------------------------------------------------------------
# Fork


def test_fork_copies_and_then_both_go_their_own_way(manager: SessionManager) -> None:
    ids = seed(manager)
    source = manager.load(ids["full"])
    assert source is not None
    fork_id = manager.fork_session(ids["full"])
    fork = manager.load(fork_id)
    assert fork is not None and same(fork.data, source.data) and same(fork.metadata, source.metadata)
    assert fork.version == 1 and fork.expires_at == source.expires_at and fork.created_at > source.created_at
    manager.save_session(fork_id, {**fork.data, "messages": [*fork.data["messages"], HumanMessage("fork only")],
                                   "tasks": []})
    manager.save_session(ids["full"], {**source.data, "messages": source.data["messages"][:2]})
    assert same(manager.load(fork_id).data["messages"][:-1], source.data["messages"])  # type: ignore[union-attr]
    assert manager.load(fork_id).data["tasks"] == []  # type: ignore[union-attr]
    assert len(manager.load(ids["full"]).data["messages"]) == 2  # type: ignore[union-attr]
    assert manager.load(ids["full"]).data["tasks"] == source.data["tasks"]  # type: ignore[union-attr]


def test_fork_at_a_message_with_new_metadata_and_id(manager: SessionManager) -> None:
    ids = seed(manager)
    fork_id = manager.fork_session(ids["large"], new_session_id="branch-" + ids["large"], at_message=10,
                                   metadata={"name": "branch", "when": dt.date(2024, 1, 1)})
    assert fork_id == "branch-" + ids["large"]
    fork = manager.load(fork_id)
    assert fork is not None and fork.message_count == 10 and fork.metadata == {"name": "branch",
                                                                                "when": dt.date(2024, 1, 1)}
    assert fork.data["messages"] == manager.load(ids["large"]).data["messages"][:10]  # type: ignore[union-attr]
    manager.save_session(fork_id, {"messages": [*fork.data["messages"], HumanMessage("next")]})
    assert len(manager.load_session(fork_id)["messages"]) == 11  # type: ignore[index]
    assert manager.fork_session(ids["plain"], at_message=0) and manager.fork_session(ids["plain"], at_message=5)


def test_fork_refusals_change_nothing(manager: SessionManager) -> None:
    ids = seed(manager)
    count = manager.count_sessions(include_inactive=True)
    with pytest.raises(SessionNotFound):
        manager.fork_session("nobody")
    with pytest.raises(SessionNotFound):
        manager.fork_session(ids["deleted"])
    with pytest.raises(SessionExists):
        manager.fork_session(ids["plain"], new_session_id=ids["full"])
    with pytest.raises(InvalidInput, match="at_message: is 6, past the 5 messages"):
        manager.fork_session(ids["plain"], at_message=6)
    with pytest.raises(InvalidInput, match="no message list"):
        manager.fork_session(ids["nomsgs"], at_message=0)
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(InvalidInput, match="at_message"):
            manager.fork_session(ids["plain"], at_message=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="new_session_id"):
        manager.fork_session(ids["plain"], new_session_id="")
    with pytest.raises(InvalidInput, match="metadata"):
        manager.fork_session(ids["plain"], metadata=["not", "a", "dict"])  # type: ignore[arg-type]
    assert manager.count_sessions(include_inactive=True) == count


def test_fork_on_the_file_store(settings: Any) -> None:
    with SessionManager(settings, use_postgres=False) as files:
        files.save_session("s", {"messages": [HumanMessage("a"), AIMessage("b")], "tasks": [1]},
                           metadata={"user_id": "u"})
        fork_id = files.fork_session("s", at_message=1)
        assert files.load_session(fork_id) == {"messages": [HumanMessage("a")], "tasks": [1]}
        assert files.session_info(fork_id)["metadata"] == {"user_id": "u"}  # type: ignore[index]
        with pytest.raises(InvalidInput, match="past the 2 messages"):
            files.fork_session("s", at_message=3)


def test_a_fork_of_a_long_session_is_an_exact_copy(manager: SessionManager) -> None:
    sid = "long-" + uuid.uuid4().hex[:6]
    manager.save_session(sid, {"messages": [HumanMessage(f"m{i}", id=str(i)) for i in range(1_000)],
                               "files": {"big": "f" * 10_000}})
    fork = manager.fork_session(sid)
    records = lines_by_id(export_text(manager, Selection([sid, fork])))
    original, copy = records[sid], records[fork]
    assert len(copy["messages"]) == 1_000
    assert {**original, "session_id": fork, "version": 1, "created_at": None, "last_updated": None} == \
        {**copy, "created_at": None, "last_updated": None}


def test_expiry_survives_the_round_trip_to_the_microsecond(manager: SessionManager, target: SessionManager) -> None:
    sid = "exp-" + uuid.uuid4().hex[:6]
    manager.save_session(sid, {"messages": []}, expires_in_hours=1.234567)
    import_text(target, export_text(manager, Selection([sid])))
    a, b = manager.session_info(sid), target.session_info(sid)
    assert a is not None and b is not None and a["expires_at"] == b["expires_at"] and a["created_at"] == b["created_at"]
