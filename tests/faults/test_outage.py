"""PostgreSQL stopped (``pg_ctl stop -m immediate``) while an engine process takes turns in a loop."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from app.config import Settings
from app.core.engine import IsotopeEngine
from app.core.postgres_session_manager import SessionManager
from tests.api.server import ApiServer
from tests.faults.cluster import Cluster
from tests.faults.harness import Worker, audit, spool_depth, stored_pairs_ok, wait_until
from tests.helpers import make_settings

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.multiprocess]


def overlapping(acked: list[dict], start: float, end: float) -> list[dict]:
    """The acknowledged turns that were running at some moment of [start, end)."""
    return [a for a in acked if a["started"] < end and a["started"] + a["seconds"] > start]


def outage(cluster: Cluster, database_url: str, data_dir: Path, seconds: float) -> dict[str, float]:
    worker = Worker(database_url, data_dir)
    try:
        session_id = worker.create("outage")
        worker.loop(session_id, "turn")
        worker.wait_acked(20)

        down_at = time.time()
        cluster.stop("immediate")
        threading.Event().wait(seconds)  # the outage itself: the fault lasts this long
        during_status = worker.status()  # what /ready, doctor and the metrics show
        assert during_status["fallback_active"] and during_status["spool_depth"] > 0, during_status
        up_at = time.time()
        cluster.start()
        replay_s = wait_until(lambda: spool_depth(data_dir) == 0, 60, "the spool replays by itself")
        during = overlapping(worker.acked, down_at, up_at)
        back = len(worker.acked)
        worker.wait_acked(back + 10)  # and the loop goes on against PostgreSQL
        worker.stop_loop()
        status = worker.status()
        assert worker.exit() == 0
    finally:
        worker.reap()

    result = audit(database_url, session_id, {"worker": [a["text"] for a in worker.acked]})
    figures = {
        "outage_s": round(up_at - down_at, 2),
        "acknowledged": result.acknowledged,
        "acknowledged_during_outage": len(during),
        "spooled": sum(1 for a in worker.acked if a["backend"] == "spool"),
        "lost": len(result.lost),
        "duplicated": len(result.duplicated),
        "spool_depth_at_restart": during_status["spool_depth"],
        "replay_s": round(replay_s, 2),
        "slowest_outage_turn_s": round(max((a["seconds"] for a in during), default=0.0), 3),
        "failed_turns": len(worker.unacked),
    }
    print(f"\noutage {seconds} s: {figures}; last replay {status['last_replay']}")
    assert not result.lost and not result.duplicated and not result.out_of_order, result
    assert result.unacknowledged_stored == 0 and not worker.unacked, worker.unacked[:3]
    assert stored_pairs_ok(database_url, session_id) == []
    versions = [a["version"] for a in worker.acked]
    jumps = [(a["text"], a["version"], a["backend"]) for a, b in zip(worker.acked, worker.acked[1:], strict=False)
             if b["version"] != a["version"] + 1]
    assert versions[0] == 2 and not jumps, f"each turn is the session's next version: {jumps}"
    assert len(during) >= 5, "turns must keep being acknowledged during the outage"
    assert status["spool_depth"] == 0 and not status["fallback_active"]
    return figures


@pytest.mark.timeout(120)
def test_a_3_5_second_outage_loses_no_acknowledged_turn(cluster: Cluster, fault_db: str, data_dir: Path) -> None:
    figures = outage(cluster, fault_db, data_dir, 3.5)
    assert figures["slowest_outage_turn_s"] < 6.0
    assert figures["replay_s"] < 10.0


@pytest.mark.timeout(180)
def test_a_30_second_outage_loses_no_acknowledged_turn(cluster: Cluster, fault_db: str, data_dir: Path) -> None:
    figures = outage(cluster, fault_db, data_dir, 30)
    assert figures["slowest_outage_turn_s"] < 6.0
    assert figures["replay_s"] < 15.0


@pytest.mark.timeout(120)
def test_an_outage_that_begins_between_turns(cluster: Cluster, fault_db: str, data_dir: Path) -> None:
    """The first thing to meet the dead server is the next turn's start, not a save."""
    with Worker(fault_db, data_dir) as worker:
        session_id = worker.create("idle")
        worker.loop(session_id, "before", count=3)
        worker.expect("looped")
        cluster.stop("immediate")
        worker.loop(session_id, "during", count=5)
        worker.expect("looped", timeout=60)
        cluster.start()
        replay_s = wait_until(lambda: spool_depth(data_dir) == 0, 60, "the spool replays by itself")
        assert worker.exit() == 0
    result = audit(fault_db, session_id, {"worker": [a["text"] for a in worker.acked]})
    print(f"\nidle outage: {len(worker.acked)} acknowledged, {len(worker.unacked)} failed, replay {replay_s:.2f} s, "
          f"slowest {max(a['seconds'] for a in worker.acked):.2f} s")
    assert not worker.unacked, worker.unacked
    expected = [f"before {n}" for n in (1, 2, 3)] + [f"during {n}" for n in range(1, 6)]
    assert [a["text"] for a in worker.acked] == expected
    assert not result.lost and not result.duplicated and not result.out_of_order
    assert [a["version"] for a in worker.acked] == list(range(2, 10))  # no version repeats or restarts


@pytest.mark.timeout(120)
def test_a_turn_begun_in_the_outage_and_saved_after_it_keeps_the_other_instances_turn(
        cluster: Cluster, fault_db: str, tmp_path: Path) -> None:
    """The turn holds a file lock, which the other instance cannot see; PostgreSQL comes back and
    the other instance takes a turn before this one saves. Both turns must stay."""
    def settings(name: str) -> Settings:
        return make_settings(fault_db, tmp_path / name, **{"store.spool_replay_interval_s": 600})

    first = [HumanMessage("first"), AIMessage("reply first")]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with SessionManager(settings("a"), use_postgres=True) as manager:
        manager.save("edge", {"messages": first})
        cluster.stop("immediate")
        with manager.lock("edge"):
            assert manager.fallback_active  # the lock could not reach PostgreSQL: a file lock
            cluster.start()
            assert manager.pg.probe()
            manager.store.replayer.step()  # what the background thread does once the server answers
            assert not manager.fallback_active
            with SessionManager(settings("b"), use_postgres=True) as other, other.lock("edge"):
                mine = other.load("edge").data["messages"]
                other.save("edge", {"messages": [*mine, HumanMessage("other"), AIMessage("reply other")]})
            result = manager.save("edge", {"messages": [*first, HumanMessage("mine"), AIMessage("reply mine")]})
        assert result.backend == "spool"
        manager.store.replayer.step()
        assert manager.status()["spool_depth"] == 0
        stored = manager.load("edge")
    assert [m.content for m in stored.data["messages"] if m.type == "human"] == ["first", "other", "mine"]


@pytest.mark.timeout(180)
def test_the_http_api_takes_turns_through_an_outage_and_reports_the_spool(cluster: Cluster, fault_db: str,
                                                                         data_dir: Path) -> None:
    server = ApiServer(fault_db, data_dir, config={"api": {"cleanup_interval_s": 3600}}, ISOTOPE_LOG_LEVEL="INFO")
    try:
        with server.client(timeout=60) as client:
            session_id = client.post("/api/sessions", json={"metadata": {"name": "outage"}}).json()["session_id"]
            path = f"/api/sessions/{session_id}/messages"
            sent = []
            for n in range(3):
                sent.append(f"before {n}")
                assert client.post(path, json={"content": sent[-1]}).status_code == 200
            cluster.stop("immediate")
            slowest = 0.0
            for n in range(5):
                sent.append(f"during {n}")
                started = time.perf_counter()
                response = client.post(path, json={"content": sent[-1]})
                slowest = max(slowest, time.perf_counter() - started)
                assert response.status_code == 200, response.text
            ready = client.get("/ready").json()
            assert ready["store"] == "fallback" and ready["fallback_active"] and ready["spool_depth"] >= 5
            assert "isotope_spool_depth 5.0" in client.get("/metrics").text
            assert "isotope_fallback_active 1.0" in client.get("/metrics").text
            cluster.start()
            replay_s = wait_until(lambda: client.get("/ready").json()["spool_depth"] == 0, 60,
                                  "/ready shows the spool replayed")
            assert client.get("/ready").json()["store"] == "postgres"
            messages = client.get(path).json()["messages"]
        assert [m["content"] for m in messages if m["type"] == "human"] == sent
        print(f"\nHTTP through an outage: 5 turns acknowledged while down (slowest {slowest:.2f} s), "
              f"spool replayed {replay_s:.2f} s after the restart")
        assert slowest < 6.0
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.timeout(180)
def test_a_frozen_server_bounds_each_turn_and_loses_nothing(cluster: Cluster, fault_db: str, data_dir: Path) -> None:
    """SIGSTOP of every server process: its kernel still acknowledges TCP, so neither keepalives nor
    the server's statement_timeout end a query's wait; the client-side deadline must."""
    config = {"store": {"statement_timeout_s": 2, "connect_timeout_s": 1}}
    with Worker(fault_db, data_dir, config=config) as worker:
        worker.create("frozen")
        worker.loop("frozen", "turn")
        worker.wait_acked(10)
        frozen_at = time.time()
        cluster.signal_all(signal.SIGSTOP)
        try:
            worker.wait_acked(len(worker.acked) + 10, timeout=60)  # turns go on, through the spool
            threading.Event().wait(max(0.0, frozen_at + 8 - time.time()))  # the freeze lasts 8 s at least
        finally:
            thawed_at = time.time()
            cluster.signal_all(signal.SIGCONT)
        replay_s = wait_until(lambda: spool_depth(data_dir) == 0, 60, "the spool replays after the thaw")
        worker.wait_acked(len(worker.acked) + 5)
        worker.stop_loop()
        assert worker.exit() == 0
    during = overlapping(worker.acked, frozen_at, thawed_at)
    result = audit(fault_db, "frozen", {"worker": [a["text"] for a in worker.acked]})
    slowest = max(a["seconds"] for a in during)
    print(f"\nserver frozen {thawed_at - frozen_at:.1f} s: {len(during)} turns acknowledged meanwhile, slowest "
          f"{slowest:.2f} s (deadline 2 + 1 s), lost {len(result.lost)}, duplicated {len(result.duplicated)}, "
          f"replayed {replay_s:.2f} s after the thaw")
    assert not result.lost and not result.duplicated and not result.out_of_order
    assert not worker.unacked
    assert slowest < 6.0
    assert stored_pairs_ok(fault_db, "frozen") == []


@pytest.mark.timeout(120)
def test_a_session_created_just_before_the_outage_takes_turns_during_it(cluster: Cluster, fault_db: str,
                                                                        data_dir: Path) -> None:
    with Worker(fault_db, data_dir) as worker:
        worker.create("newborn")
        cluster.stop("immediate")
        worker.loop("newborn", "during", count=3)
        worker.expect("looped", timeout=60)
        cluster.start()
        wait_until(lambda: spool_depth(data_dir) == 0, 60, "the spool replays by itself")
        assert worker.exit() == 0
    assert not worker.unacked, worker.unacked
    assert [a["version"] for a in worker.acked] == [2, 3, 4]
    assert not audit(fault_db, "newborn", {"worker": [a["text"] for a in worker.acked]}).lost


@pytest.mark.timeout(120)
def test_an_outage_between_seeing_a_newer_version_and_reading_it_keeps_both_instances_turns(
        cluster: Cluster, fault_db: str, tmp_path: Path) -> None:
    """Instance B learns from PostgreSQL that A saved a newer version, then the server dies before B
    reads it. B's turns go on from B's own copy (spooled), and the replay keeps A's turn and B's."""
    def settings(name: str) -> Settings:
        (tmp_path / name).mkdir()
        return make_settings(fault_db, tmp_path / name, **{"store.spool_replay_interval_s": 600,
                                                           "store.connect_timeout_s": 0.5})

    with IsotopeEngine(config=settings("a")) as a, IsotopeEngine(config=settings("b")) as b:
        sid = a.create_session(session_id="seen-not-read")
        assert b.resume_workflow("add task: from b before", sid, stream=False)["version"] == 2
        assert a.resume_workflow("add task: from a", sid, stream=False)["version"] == 3
        assert b.manager.session_info(sid)["version"] == 3  # B has seen version 3, never read it
        cluster.stop("immediate")
        during = list(b.resume_workflow("add task: from b during", sid))
        assert during[-1]["type"] == "done", during[-1]
        assert during[-1]["backend"] == "spool"
        cluster.start()
        assert b.manager.pg.probe()
        b.manager.store.replayer.step()  # what the background thread does once the server answers
        assert b.manager.status()["spool_depth"] == 0
        stored = a.manager.load(sid)
    humans = [m.content for m in stored.data["messages"] if m.type == "human"]
    assert humans == ["add task: from b before", "add task: from a", "add task: from b during"]
