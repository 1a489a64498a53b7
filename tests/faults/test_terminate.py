"""``pg_terminate_backend`` of the engines' connections in the middle of their turns."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.faults.harness import Worker, audit, spool_depth, stored_pairs_ok, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.multiprocess]

TERMINATE = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE datname = %s AND application_name = 'isotope' AND pid <> pg_backend_pid()
"""


def terminate_mid_turns(database_url: str, admin_url: str, root: Path, instances: int,
                        rounds: int) -> tuple[int, list[dict]]:
    rng = random.Random(20261126 + instances)
    dbname = conninfo_to_dict(database_url)["dbname"]
    workers = [Worker(database_url, root / f"i{n}", name=f"i{n}") for n in range(instances)]
    terminated = 0
    try:
        workers[0].create("terminated")
        for n, worker in enumerate(workers):
            worker.loop("terminated", f"i{n}")
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for _ in range(rounds):
                target = rng.choice(workers)
                target.wait_acked(len(target.acked) + rng.randint(1, 4))
                threading.Event().wait(rng.uniform(0, 0.02))  # a random moment of the next turn
                terminated += admin.execute(TERMINATE, (dbname,)).fetchone()[0]
        for worker in workers:
            worker.wait_acked(len(worker.acked) + 5)  # and they go on
            worker.stop_loop()
        for worker in workers:
            wait_until(lambda w=worker: spool_depth(w.data_dir) == 0, 30, "anything spooled is replayed")
        statuses = [worker.status() for worker in workers]
        assert all(worker.exit() == 0 for worker in workers)
    finally:
        for worker in workers:
            worker.reap()
    result = audit(database_url, "terminated", {w.name: [a["text"] for a in w.acked] for w in workers})
    spooled = sum(1 for w in workers for a in w.acked if a["backend"] == "spool")
    failed = [u for w in workers for u in w.unacked]
    slowest = max(a["seconds"] for w in workers for a in w.acked)
    print(f"\npg_terminate_backend, {instances} instance(s), {rounds} rounds ({terminated} backends): "
          f"acknowledged {result.acknowledged}, lost {len(result.lost)}, duplicated {len(result.duplicated)}, "
          f"failed {len(failed)}, spooled {spooled}, slowest turn {slowest:.3f} s")
    assert terminated >= rounds  # every round killed at least the pool's idle connection
    assert not result.lost and not result.duplicated and not result.out_of_order, result
    assert result.unacknowledged_stored <= len(failed)
    assert stored_pairs_ok(database_url, "terminated") == []
    assert not any(status["fallback_active"] for status in statuses)
    return spooled, failed


@pytest.mark.timeout(180)
def test_terminated_backends_mid_turn_lose_nothing(database_url: str, pg_admin_url: str, tmp_path: Path) -> None:
    spooled, failed = terminate_mid_turns(database_url, pg_admin_url, tmp_path, 1, 25)
    assert spooled == 0, "a terminated backend is a dead connection, not an outage: the pool replaces it"
    assert not failed, failed[:3]


@pytest.mark.timeout(180)
def test_terminated_backends_with_two_instances_on_one_session(database_url: str, pg_admin_url: str,
                                                               tmp_path: Path) -> None:
    terminate_mid_turns(database_url, pg_admin_url, tmp_path, 2, 25)
