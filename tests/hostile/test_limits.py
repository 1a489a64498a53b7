"""``store.max_message_bytes`` and ``store.max_session_bytes``: clear refusals that change nothing.

Limits count UTF-8 bytes of the encoded value, not characters. They hold on every path: PostgreSQL,
the file store, and the outage spool.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from app.core.postgres_session_manager import SessionManager
from app.errors import LimitExceeded
from tests.helpers import free_port, make_settings

MESSAGE_LIMIT = 512
SESSION_LIMIT = 4096



@pytest.fixture(params=["postgres", "files", "outage"])
def limited(request: pytest.FixtureRequest, database_url: str, data_dir: Path) -> Iterator[SessionManager]:
    url = database_url if request.param != "outage" else f"postgresql://isotope@127.0.0.1:{free_port()}/x"
    settings = make_settings(url, data_dir, **{"store.max_message_bytes": MESSAGE_LIMIT,
                                              "store.max_session_bytes": SESSION_LIMIT,
                                              "store.connect_timeout_s": 0.5})
    with SessionManager(settings, use_postgres=request.param != "files") as manager:
        if request.param == "outage":
            manager.test_connection()
            assert manager.fallback_active
        yield manager


def state(*texts: str, **members: object) -> dict:
    messages = [HumanMessage(t) if i % 2 == 0 else AIMessage(t) for i, t in enumerate(texts)]
    return {"messages": messages, **members}


def unchanged(manager: SessionManager, session_id: str, before: object) -> None:
    stored = manager.load(session_id)
    assert (stored.data, stored.metadata, stored.version) == before


def snapshot(manager: SessionManager, session_id: str) -> object:
    stored = manager.load(session_id)
    return stored.data, stored.metadata, stored.version


def test_a_message_over_the_limit_is_refused_by_name(limited: SessionManager) -> None:
    limited.save("s", state("hello", "hi"), {"name": "ok"})
    before = snapshot(limited, "s")
    with pytest.raises(LimitExceeded) as caught:
        limited.save("s", state("hello", "hi", "x" * MESSAGE_LIMIT))
    exc = caught.value
    assert exc.field == "session_data.messages[2]"
    assert f"the limit is {MESSAGE_LIMIT}" in exc.problem and "store.max_message_bytes" in exc.problem
    unchanged(limited, "s", before)
    limited.save("s", state("hello", "hi", "x" * (MESSAGE_LIMIT // 2)))  # under the limit: fine
    assert limited.load("s").message_count == 3


def test_the_limit_counts_bytes_not_characters(limited: SessionManager) -> None:
    fits = "é" * (MESSAGE_LIMIT // 4)  # half the limit in UTF-8 bytes
    limited.save("bytes", state(fits))
    with pytest.raises(LimitExceeded) as caught:
        limited.save("bytes", state(fits, "é" * (MESSAGE_LIMIT // 2 + 1)))  # fewer characters, more bytes
    assert caught.value.field == "session_data.messages[1]"
    assert limited.load("bytes").message_count == 1


def test_metadata_over_the_message_limit_is_refused(limited: SessionManager) -> None:
    limited.save("meta", state("a"), {"name": "small"})
    before = snapshot(limited, "meta")
    with pytest.raises(LimitExceeded) as caught:
        limited.save("meta", state("a", "b"), {"name": "n" * MESSAGE_LIMIT})
    assert caught.value.field == "metadata" and "store.max_message_bytes" in caught.value.problem
    unchanged(limited, "meta", before)


def test_a_session_growing_past_its_limit_keeps_everything_before(limited: SessionManager) -> None:
    texts: list[str] = []
    accepted = 0
    with pytest.raises(LimitExceeded) as caught:
        for n in range(100):
            texts.append(f"turn {n} " + "y" * 200)
            limited.save("grow", state(*texts))
            accepted += 1
    exc = caught.value
    assert exc.field == "session_data"
    assert f"the limit is {SESSION_LIMIT}" in exc.problem and "store.max_session_bytes" in exc.problem
    stored = limited.load("grow")
    assert stored.message_count == accepted and stored.version == accepted
    assert [m.content for m in stored.data["messages"]] == texts[:accepted]
    print(f"\n{limited.backend}: {accepted} messages of ~210 bytes fit in {SESSION_LIMIT} bytes")


@pytest.mark.parametrize("member", ["tasks", "files"])
def test_other_members_count_towards_the_session_limit_in_bytes(limited: SessionManager, member: str) -> None:
    limited.save("members", state("a"))
    before = snapshot(limited, "members")
    big = "é" * (SESSION_LIMIT // 2 + 10)  # under the limit in characters, over it in bytes
    value = [{"title": big}] if member == "tasks" else {"notes.txt": big}
    with pytest.raises(LimitExceeded) as caught:
        limited.save("members", state("a", **{member: value}))
    assert caught.value.field == "session_data" and "store.max_session_bytes" in caught.value.problem
    unchanged(limited, "members", before)
