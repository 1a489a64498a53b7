"""Hostile input through the session manager: every call round-trips or is refused, changing nothing.

Run over PostgreSQL, the file store, and PostgreSQL unreachable (outage spool plus local copy).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

from app.core.postgres_session_manager import SessionManager
from app.errors import InvalidInput
from tests.helpers import free_port, make_settings
from tests.hostile.strategies import (
    ANY_CHAR,
    same,
    saves,
    session_ids,
    valid_id,
    valid_save,
)

# psycopg_pool's worker threads draw jitter from the global `random` when they open a connection;
# hypothesis notices the global state moving while it draws an example and warns about the
# strategy. Nothing in these strategies uses `random`.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning")

PROPERTY = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
FIELDS = {"session_id", "session_data", "metadata", "expires_in_hours", "limit", "offset"}



@pytest.fixture(params=["postgres", "files", "outage"])
def hostile_manager(request: pytest.FixtureRequest, database_url: str, data_dir: Path) -> Iterator[SessionManager]:
    """The manager over PostgreSQL, over the file store, and with PostgreSQL unreachable."""
    if request.param == "outage":
        url = f"postgresql://isotope@127.0.0.1:{free_port()}/isotope"
        settings_ = make_settings(url, data_dir, **{"store.connect_timeout_s": 0.5})
    else:
        settings_ = make_settings(database_url, data_dir)
    with SessionManager(settings_, use_postgres=request.param != "files") as manager:
        if request.param == "outage":
            manager.test_connection()  # trips the breaker once, up front
            assert manager.fallback_active
        yield manager


def observe(manager: SessionManager, session_id: Any) -> Any:
    """Everything a caller can see of one session (for valid ids), to prove a refusal changed nothing."""
    if not valid_id(session_id):
        return manager.count_sessions(include_inactive=True)
    stored = manager.load(session_id)
    info = manager.session_info(session_id, include_inactive=True)
    return (info and {k: v for k, v in info.items() if k != "last_updated"},
            stored and (stored.data, stored.metadata, stored.version), manager.count_sessions(True))


def refused(exc: InvalidInput) -> None:
    assert exc.field in FIELDS or exc.field.startswith("session_data"), exc.field
    assert exc.problem and str(exc).startswith(exc.field)


@PROPERTY
@given(case=saves)
def test_save_round_trips_or_is_refused_without_a_trace(hostile_manager: SessionManager, case: Any) -> None:
    manager = hostile_manager
    session_id, data, metadata, expires = case
    before = observe(manager, session_id)
    previous = manager.session_info(session_id, include_inactive=True) if valid_id(session_id) else None
    if not valid_save(session_id, data, metadata, expires):
        event("refused")
        with pytest.raises(InvalidInput) as caught:
            manager.save(session_id, data, metadata, expires)
        refused(caught.value)
        assert observe(manager, session_id) == before
        return
    event("accepted")
    result = manager.save(session_id, data, metadata, expires)
    assert not result.skipped  # every generated type is storable
    stored = manager.load(session_id)
    # None keeps the stored expiry, so a session that had expired stays invisible.
    kept_expired = expires is None and previous is not None and previous["expires_at"] is not None \
        and previous["expires_at"] <= datetime.now(UTC)
    if kept_expired or (expires is not None and float(expires) == 0):
        assert stored is None and manager.session_info(session_id) is None  # expired at once
        assert manager.session_info(session_id, include_inactive=True)["version"] == result.version
        return
    assert stored is not None and stored.version == result.version
    assert same(stored.data, data), (stored.data, data)
    expected_meta = metadata if metadata is not None else (previous["metadata"] if previous else {})
    assert same(stored.metadata, expected_meta), (stored.metadata, expected_meta)
    assert same(manager.session_info(session_id)["metadata"], expected_meta)
    assert manager.load_session(session_id) is not None


@PROPERTY
@given(session_id=session_ids, limit=st.one_of(st.integers(), st.floats(), st.none(), st.text(max_size=3)),
       soft=st.booleans())
def test_reads_and_deletes_with_hostile_ids_answer_or_refuse(hostile_manager: SessionManager, session_id: Any,
                                                             limit: Any, soft: bool) -> None:
    manager = hostile_manager
    if valid_id(session_id):
        assert manager.load_session(session_id) is None
        assert manager.session_info(session_id) is None
        assert manager.delete_session(session_id, soft_delete=soft) is False
        with manager.lock(session_id, timeout=1):
            pass
    else:
        for call in (manager.load_session, manager.session_info, manager.delete_session, manager.load):
            with pytest.raises(InvalidInput) as caught:
                call(session_id)
            refused(caught.value)
        with pytest.raises(InvalidInput), manager.lock(session_id):
            pass
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit <= 10_000:
        assert isinstance(manager.list_sessions(limit=limit), list)
    else:
        with pytest.raises(InvalidInput) as caught:
            manager.list_sessions(limit=limit)
        refused(caught.value)


DEPTHS = [50, 400, 1000, 5000]


def nest(depth: int, kind: str) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deep_nesting_round_trips_or_is_refused_clearly(hostile_manager: SessionManager, kind: str) -> None:
    manager = hostile_manager
    outcomes = {}
    for depth in DEPTHS:
        for where in ("data", "message", "metadata"):
            sid = f"deep-{kind}-{depth}-{where}"
            value = nest(depth, kind)
            data = {"messages": [HumanMessage("hi")], "tasks": value if where == "data" else []}
            if where == "message":
                data["messages"].append(value)
            metadata = {"m": value} if where == "metadata" else None
            try:
                manager.save(sid, data, metadata)
            except InvalidInput as exc:
                assert exc.field == ("metadata" if where == "metadata" else "session_data"), exc
                assert "nests" in exc.problem and "flatten" in exc.problem
                assert manager.session_info(sid, include_inactive=True) is None
                outcomes[(depth, where)] = "refused"
                continue
            stored = manager.load(sid)
            assert stored is not None and stored.data == data and (metadata is None or stored.metadata == metadata)
            outcomes[(depth, where)] = "stored"
    print(f"\n{manager.backend}{' (outage)' if manager.fallback_active else ''} {kind} nesting: {outcomes}")
    assert outcomes[(50, "data")] == outcomes[(50, "metadata")] == "stored"
    assert outcomes[(5000, "data")] == outcomes[(5000, "message")] == outcomes[(5000, "metadata")] == "refused"


def test_huge_strings_and_numbers_round_trip(hostile_manager: SessionManager) -> None:
    manager = hostile_manager
    text = "".join(chr(c) for c in range(0x20, 0x3000)) * 100  # 1.2 M characters, 3.4 MB of UTF-8
    data = {"messages": [HumanMessage(text + "\x00\ud800")], "big": 10**4000, "small": -(10**4000),
            "floats": [1e308, -1e-308, 5e-324, float("inf")], "blob": bytes(range(256)) * 1000}
    manager.save("huge", data, {"note": text[:100_000]})
    stored = manager.load("huge")
    assert stored is not None and same(stored.data, data)
    assert stored.metadata == {"note": text[:100_000]}


@given(text=st.text(ANY_CHAR, min_size=1, max_size=200))
@PROPERTY
def test_any_text_in_a_message_round_trips(hostile_manager: SessionManager, text: str) -> None:
    manager = hostile_manager
    data = {"messages": [HumanMessage(text), HumanMessage(content=[{"type": "text", "text": text}])],
            text if valid_id(text) and not text.startswith("$") else "other": text}
    manager.save("texts", data, {text: text})
    stored = manager.load("texts")
    assert stored is not None and stored.data == data and stored.metadata == {text: text}
