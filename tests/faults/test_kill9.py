"""kill -9 of the engine process at random moments: mid-turn, mid-spool during an outage, mid-replay."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.faults.cluster import Cluster
from tests.faults.harness import Worker, audit, spool_depth, stored_pairs_ok, stored_row, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.multiprocess]

SEED = int(os.environ.get("ISOTOPE_FAULT_SEED", time.time_ns() % 1_000_000))


def kill_mid_turn(worker: Worker, rng: random.Random, after: int) -> None:
    """Let ``after`` more turns be acknowledged, then kill -9 at a random point of the next one."""
    worker.wait_acked(len(worker.acked) + after)
    threading.Event().wait(rng.uniform(0, 0.03))  # a random moment inside the following turn
    worker.kill9()


def texts(workers: list[Worker]) -> list[str]:
    return [a["text"] for w in workers for a in w.acked]


def check(database_url: str, session_id: str, workers: list[Worker], label: str) -> None:
    result = audit(database_url, session_id, {"engine": texts(workers)})
    versions = [a["version"] for w in workers for a in w.acked]
    print(f"\n{label} (seed {SEED}): acknowledged {result.acknowledged}, lost {len(result.lost)}, "
          f"duplicated {len(result.duplicated)}, stored but never acknowledged {result.unacknowledged_stored}, "
          f"processes {len(workers)}, kills {len(workers) - 1}")
    assert not result.lost, f"acknowledged turns lost: {result.lost}"
    assert not result.duplicated, f"stored twice: {result.duplicated}"
    assert not result.out_of_order
    assert versions == sorted(set(versions)), "an acknowledged version repeats or goes back"
    assert stored_pairs_ok(database_url, session_id) == []
    version, count, rows = stored_row(database_url, session_id)
    assert count == rows == 2 * len(result.stored)


@pytest.mark.timeout(240)
def test_kill_9_at_random_moments_over_many_turns(cluster: Cluster, fault_db: str, data_dir: Path) -> None:
    rng = random.Random(SEED)
    workers: list[Worker] = []
    try:
        for n in range(8):
            worker = Worker(fault_db, data_dir, name=f"life{n}")
            workers.append(worker)
            if n == 0:
                worker.create("kill9")
            worker.loop("kill9", f"life{n}")
            kill_mid_turn(worker, rng, rng.randint(1, 12))
        last = Worker(fault_db, data_dir, name="last")
        workers.append(last)
        last.loop("kill9", "last", count=3)
        last.expect("looped")
        assert last.exit() == 0
    finally:
        for worker in workers:
            worker.reap()
    check(fault_db, "kill9", workers, "kill -9 at random moments, PostgreSQL up")


@pytest.mark.timeout(300)
def test_kill_9_during_an_outage_and_during_replay(cluster: Cluster, fault_db: str, data_dir: Path) -> None:
    rng = random.Random(SEED)
    workers: list[Worker] = []

    def start(name: str, wait_ready: bool = True) -> Worker:
        workers.append(Worker(fault_db, data_dir, name=name, wait_ready=wait_ready))
        return workers[-1]

    try:
        first = start("before")
        first.create("kill9")
        first.loop("kill9", "up")
        first.wait_acked(10)
        cluster.stop("immediate")
        # Killed mid-turn while PostgreSQL is down: the spool and the local copy carry on.
        kill_mid_turn(first, rng, rng.randint(5, 20))
        for n in range(3):
            during = start(f"outage{n}")
            assert during.ready["status"]["spool_depth"] > 0
            during.loop("kill9", f"outage{n}")
            kill_mid_turn(during, rng, rng.randint(40, 70))
        depth = spool_depth(data_dir)
        cluster.start()
        # Killed while it replays the spool (start-up restores the session, which drains its backlog).
        kills_in_replay = 0
        for n in range(3):
            left = spool_depth(data_dir)
            if left < 4:
                break
            replayer = start(f"replay{n}", wait_ready=False)
            # Killed as soon as a first batch is committed (its files being unlinked, the next
            # batch's transaction open), give or take a few milliseconds.
            wait_until(lambda left=left: spool_depth(data_dir) < left, 60, "the replay begins", every=0.002)
            threading.Event().wait(rng.uniform(0, 0.02))
            replayer.kill9()
            kills_in_replay += spool_depth(data_dir) > 0
        final = start("after")
        final.loop("kill9", "after", count=5)
        final.expect("looped")
        wait_until(lambda: spool_depth(data_dir) == 0, 60, "the spool is drained")
        assert final.exit() == 0
    finally:
        for worker in workers:
            worker.reap()
    print(f"\nspool depth at restart {depth}, kills during replay {kills_in_replay}")
    assert kills_in_replay >= 1
    check(fault_db, "kill9", workers, "kill -9 during an outage and during replay")


@pytest.mark.timeout(180)
def test_a_spool_replayed_twice_stores_nothing_twice(cluster: Cluster, fault_db: str, data_dir: Path,
                                                     tmp_path: Path) -> None:
    """The state a crash between a record's commit and its unlink leaves, for every record at once:
    the spool files are back after their writes reached PostgreSQL. Replaying them again adds nothing."""
    with Worker(fault_db, data_dir, name="spooler") as worker:
        worker.create("twice")
        worker.loop("twice", "up", count=3)
        worker.expect("looped")
        cluster.stop("immediate")
        worker.loop("twice", "down", count=20)
        worker.expect("looped")
        assert worker.exit() == 0
    saved = tmp_path / "spool-copy"
    shutil.copytree(data_dir / "spool", saved)
    cluster.start()
    with Worker(fault_db, data_dir, name="replayer") as replayer:
        wait_until(lambda: spool_depth(data_dir) == 0, 60, "the spool is replayed")
        before = stored_row(fault_db, "twice")
        for path in saved.glob("*.json"):
            shutil.copy2(path, data_dir / "spool" / path.name)
        replayer.loop("twice", "after", count=2)  # its first turn drains the session's backlog
        replayer.expect("looped")
        assert spool_depth(data_dir) == 0
        assert replayer.exit() == 0
    after = stored_row(fault_db, "twice")
    assert after[1] == before[1] + 4 and after[0] == before[0] + 2
    check(fault_db, "twice", [worker, replayer], "spool replayed twice")
