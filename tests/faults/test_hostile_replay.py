"""Hostile values written while PostgreSQL is stopped reach it intact when the spool replays."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

from app.core.postgres_session_manager import SessionManager
from tests.faults.cluster import Cluster
from tests.helpers import make_settings
from tests.hostile.strategies import good_ids, good_metadatas, messages, same, valid_datas, values

pytestmark = [
    pytest.mark.fault, pytest.mark.slow,
    pytest.mark.filterwarnings(  # see tests/hostile/test_manager_input.py
        "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"),
]

# One session's life: a first state saved while PostgreSQL is up (or not), then edits while it
# is down: appended messages, a rewritten message, new members, new metadata.
edits = st.lists(st.one_of(
    st.tuples(st.just("append"), st.lists(messages, min_size=1, max_size=3)),
    st.tuples(st.just("rewrite"), messages),
    st.tuples(st.just("member"), values),
    st.tuples(st.just("metadata"), good_metadatas),
), min_size=1, max_size=5)
lives = st.dictionaries(good_ids, st.tuples(st.booleans(), valid_datas, good_metadatas, edits), min_size=1,
                        max_size=6)


def apply(data: dict[str, Any], edit: tuple[str, Any]) -> tuple[dict[str, Any], Any]:
    kind, value = edit
    data = {**data, "messages": list(data["messages"])}
    if kind == "append":
        data["messages"].extend(value)
    elif kind == "rewrite":
        data["messages"][0:1] = [value]
    elif kind == "member":
        data["extra"] = value
    return data, value if kind == "metadata" else None


# Each example stops and starts the server (a few seconds): few examples, no shrinking (a failure
# prints its whole example, which is small anyway).
@settings(max_examples=5, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(sessions=lives)
@pytest.mark.timeout(300)
def test_spooled_hostile_values_replay_into_postgres_intact(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory,
                                                            sessions: dict[str, Any]) -> None:
    cluster.ensure_running()
    url = cluster.fresh_database()
    data_dir = tmp_path_factory.mktemp("data")
    settings_ = make_settings(url, data_dir, **{"store.spool_replay_interval_s": 600})  # replayed by hand below
    expected: dict[str, tuple[dict[str, Any], Any]] = {}
    with SessionManager(settings_, use_postgres=True) as manager:
        for sid, (before_outage, data, metadata, _) in sessions.items():
            if before_outage:
                manager.save(sid, data, metadata)
        cluster.stop("immediate")
        for sid, (before_outage, data, metadata, changes) in sessions.items():
            current = data if before_outage else {**data, "messages": [HumanMessage("first"), *data["messages"]]}
            meta = metadata if metadata is not None else {}
            if not before_outage:
                manager.save(sid, current, metadata)
            for edit in changes:
                current, new_meta = apply(current, edit)
                manager.save(sid, current, new_meta)
                meta = new_meta if new_meta is not None else meta
            expected[sid] = (current, meta)
        assert manager.fallback_active and manager.status()["spool_depth"] > 0
        cluster.start()
        assert manager.pg.probe()
        manager.store.replayer.step()  # what the background thread does on its next tick
        status = manager.status()
        assert status["spool_depth"] == 0 and not status["fallback_active"], status
        assert not list((data_dir / "spool" / "failed").glob("*.json")), "no spooled write was quarantined"
    with SessionManager(settings_, use_postgres=True) as fresh:  # reads PostgreSQL, nothing cached
        for sid, (data, meta) in expected.items():
            stored = fresh.load(sid)
            assert stored is not None and stored.backend == "postgres"
            assert same(stored.data, data), (sid, stored.data, data)
            assert same(stored.metadata, meta), (sid, stored.metadata, meta)
