"""A Patroni failover and a planned switchover lose no acknowledged turn.

An engine process (tests/faults/worker.py) takes turns in a loop on a two-node Patroni cluster
with ``synchronous_mode: true``, connected with deploy/isotope/config-patroni.yaml (both nodes,
``target_session_attrs: read-write``). First ``patronictl switchover`` moves the primary while the
loop runs; then the new primary's Patroni, postmaster and every PostgreSQL process are killed
with SIGKILL mid-traffic, Patroni promotes the synchronous standby, and the loop goes on. Every
acknowledged turn must be on the surviving node exactly once, in order, and the engine must be
writing to the new primary again, not to its outage spool.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.faults.harness import Worker, spool_depth, stored_humans, stored_pairs_ok, wait_until
from tests.ha.conftest import deploy_config, isotope_on
from tests.ha.patroni import Node, PatroniCluster

pytestmark = [pytest.mark.ha, pytest.mark.slow, pytest.mark.fault, pytest.mark.multiprocess]

TURNS_PER_PHASE = 25  # acknowledged turns before and after each event


@dataclass
class Phase:
    """What one event did to the turns taken around it."""

    name: str
    acknowledged: int
    lost: int
    duplicated: int
    longest_turn_s: float
    spooled_max: int  # the deepest the engine's outage spool got
    spooled_acks: int  # turns acknowledged from the spool (no primary at that moment)
    event_s: float  # the event itself (switchover command; or kill until a new leader)
    writes_resumed_s: float  # from the event's start until a turn is written to the new primary
    after_promotion_s: float  # from the new primary's promotion until then


class NodeWatcher:
    """Watches the node that will lead, every 20 ms, over a connection kept open (a hot standby
    answers reads, and promotion keeps its connections), and the engine's spool directory.

    While the node is a standby its count of the session's human messages is the mark; the first
    time it is a primary with more than the mark, turns have reached the new primary."""

    def __init__(self, url: str, session_id: str, data_dir: Path) -> None:
        self.url, self.session_id, self.data_dir = url, session_id, data_dir
        self.mark = -1
        self.promoted_at: float | None = None
        self.passed_at: float | None = None
        self.spool_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.wait(0.02):
            self.spool_max = max(self.spool_max, spool_depth(self.data_dir))
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, connect_timeout=2, autocommit=True)
                row = conn.execute("SELECT pg_is_in_recovery(), count(*) FROM isotope_messages"
                                   " WHERE session_id = %s AND message->>'type' = 'human'",
                                   (self.session_id,)).fetchone()
            except psycopg.Error:
                conn = None
                continue
            assert row is not None
            standby, count = bool(row[0]), int(row[1])
            if standby:
                self.mark = count
            elif self.promoted_at is None:
                self.promoted_at = time.monotonic()
            elif self.passed_at is None and count > self.mark:
                self.passed_at = time.monotonic()
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run_phase(worker: Worker, prefix: str, cluster: PatroniCluster, survivor: Node,
              event: Any, name: str) -> Phase:
    """Loop turns with ``prefix``: TURNS_PER_PHASE before ``event()``, then until TURNS_PER_PHASE
    more are acknowledged on the node that leads afterwards; then audit that node."""
    url = cluster.node_url(survivor, "isotope")
    watcher = NodeWatcher(url, "ha", worker.data_dir)
    try:
        start = len(worker.acked)
        worker.loop("ha", prefix)
        worker.wait_acked(start + TURNS_PER_PHASE, timeout=120)
        wait_until(lambda: watcher.mark >= 0, 30, f"{name}: {survivor.name} is watched as a standby")
        began = time.monotonic()
        event_s = event()
        wait_until(lambda: watcher.passed_at is not None, 120, f"{name}: turns reach {survivor.name} again")
        assert watcher.passed_at is not None
        resumed_s = watcher.passed_at - began
        assert watcher.promoted_at is not None
        after_promotion_s = watcher.passed_at - watcher.promoted_at
        after = len(worker.acked)
        deadline = time.monotonic() + 120
        while len(worker.acked) < after + TURNS_PER_PHASE:
            worker.expect("done", timeout=max(1.0, deadline - time.monotonic()))
        worker.stop_loop()
        wait_until(lambda: spool_depth(worker.data_dir) == 0, 60, f"{name}: the spool is replayed")
        status = worker.status()
        assert status["spool_depth"] == 0 and not status["fallback_active"], status
    finally:
        watcher.close()
    acked = [a for a in worker.acked if a["text"].startswith(prefix + " ")]
    order = [t for t in stored_humans(url, "ha") if t.startswith(prefix + " ")]
    stored = Counter(order)
    lost = [a["text"] for a in acked if stored[a["text"]] == 0]
    duplicated = [t for t, n in stored.items() if n > 1]
    assert not lost, f"{name}: acknowledged turns lost: {lost}"
    assert not duplicated, f"{name}: stored twice: {duplicated}"
    # Acknowledged turns are stored in the order they were acknowledged.
    positions = {t: i for i, t in enumerate(order)}
    assert [positions[a["text"]] for a in acked] == sorted(positions[a["text"]] for a in acked)
    # The engine is writing to the new primary itself again, not to its spool.
    tail = acked[-5:]
    assert all(a["backend"] == "postgres" for a in tail), tail
    return Phase(name=name, acknowledged=len(acked), lost=len(lost), duplicated=len(duplicated),
                 longest_turn_s=max(a["seconds"] for a in acked), spooled_max=watcher.spool_max,
                 spooled_acks=sum(1 for a in acked if a["backend"] != "postgres"),
                 event_s=event_s, writes_resumed_s=resumed_s, after_promotion_s=after_promotion_s)


@pytest.mark.timeout(300)
def test_switchover_and_kill_9_of_the_primary_lose_no_acknowledged_turn(patroni: PatroniCluster,
                                                                         tmp_path: Path) -> None:
    data_dir = tmp_path / "isotope"
    config = isotope_on(patroni, data_dir)
    assert config["postgresql"]["target_session_attrs"] == "read-write"
    first_leader, first_standby = patroni.wait_synchronous()
    phases: list[Phase] = []
    with Worker("", data_dir, name="engine", config=config) as worker:
        worker.create("ha")

        def switchover() -> float:
            began = time.monotonic()
            patroni.switchover(first_standby)
            patroni.wait_for(lambda: patroni.leader() is first_standby, 60, "the switchover completes")
            return time.monotonic() - began

        phases.append(run_phase(worker, "S", patroni, first_standby, switchover, "switchover"))
        # Both nodes again: the old primary follows as the synchronous standby.
        leader, standby = patroni.wait_synchronous(90)
        assert (leader, standby) == (first_standby, first_leader)

        def kill_primary() -> float:
            began = time.monotonic()
            killed = leader.kill9()
            assert killed >= 3  # Patroni, the postmaster and its children
            patroni.wait_for(lambda: patroni.leader() is standby, 90, "Patroni promotes the standby")
            return time.monotonic() - began

        phases.append(run_phase(worker, "F", patroni, standby, kill_primary, "kill -9 of the primary"))
        assert worker.exit() == 0

    url = patroni.node_url(standby, "isotope")
    assert stored_pairs_ok(url, "ha") == []
    for phase in phases:
        print(f"\n{phase.name}: acknowledged {phase.acknowledged}, lost {phase.lost}, duplicated "
              f"{phase.duplicated}, longest acknowledged turn {phase.longest_turn_s:.2f} s, "
              f"event {phase.event_s:.2f} s, writes on the new primary {phase.writes_resumed_s:.2f} s "
              f"after it began ({phase.after_promotion_s:.2f} s after the promotion), "
              f"deepest spool {phase.spooled_max}, acknowledged from the spool "
              f"{phase.spooled_acks}")
    assert deploy_config("config-patroni.yaml")["postgresql"]["user"] == "isotope"
