"""``pg_terminate_backend`` of the engine's connections in the middle of its turns."""

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


@pytest.mark.timeout(180)
def test_terminated_backends_mid_turn_lose_nothing(database_url: str, pg_admin_url: str, data_dir: Path) -> None:
    rng = random.Random(20261126)
    dbname = conninfo_to_dict(database_url)["dbname"]
    terminated = rounds = 0
    with Worker(database_url, data_dir) as worker:
        worker.create("terminated")
        worker.loop("terminated", "turn")
        worker.wait_acked(5)
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            for _ in range(25):
                worker.wait_acked(len(worker.acked) + rng.randint(1, 4))
                threading.Event().wait(rng.uniform(0, 0.02))  # a random moment of the next turn
                terminated += admin.execute(TERMINATE, (dbname,)).fetchone()[0]
                rounds += 1
        worker.wait_acked(len(worker.acked) + 10)  # and it goes on
        worker.stop_loop()
        wait_until(lambda: spool_depth(data_dir) == 0, 30, "anything spooled is replayed")
        status = worker.status()
        assert worker.exit() == 0
    result = audit(database_url, "terminated", {"worker": [a["text"] for a in worker.acked]})
    spooled = sum(1 for a in worker.acked if a["backend"] == "spool")
    slowest = max(a["seconds"] for a in worker.acked)
    print(f"\npg_terminate_backend x {rounds} rounds ({terminated} backends): acknowledged {result.acknowledged}, "
          f"lost {len(result.lost)}, duplicated {len(result.duplicated)}, failed {len(worker.unacked)}, "
          f"spooled {spooled}, slowest turn {slowest:.3f} s")
    assert terminated >= rounds  # every round killed at least the pool's idle connection
    assert not worker.unacked, worker.unacked[:3]
    assert not result.lost and not result.duplicated and not result.out_of_order
    assert result.unacknowledged_stored == 0
    assert stored_pairs_ok(database_url, "terminated") == []
    assert not status["fallback_active"]
    assert spooled == 0, "a terminated backend is a dead connection, not an outage: the pool replaces it"
