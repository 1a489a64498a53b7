"""Several engine processes (separate data dirs, as on separate hosts) taking turns on one session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.cluster import Cluster
from tests.faults.harness import Worker, audit, spool_depth, stored_pairs_ok, stored_row, wait_until

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def run_instances(database_url: str, root: Path, count: int, turns: int) -> dict[str, list[dict]]:
    workers = [Worker(database_url, root / f"i{n}", name=f"i{n}") for n in range(count)]
    try:
        workers[0].create("shared")
        for n, worker in enumerate(workers):  # all ready and idle: the loops overlap from the start
            worker.loop("shared", f"i{n}", count=turns)
        for worker in workers:
            worker.expect("looped", timeout=120)
        assert all(worker.exit() == 0 for worker in workers)
    finally:
        for worker in workers:
            worker.reap()
    return {w.name: w.acked for w in workers} | {"_failed": [u for w in workers for u in w.unacked]}


def check_exactly_once(database_url: str, acked: dict[str, list[dict]], count: int, turns: int) -> None:
    failed = acked.pop("_failed")
    result = audit(database_url, "shared", {name: [a["text"] for a in done] for name, done in acked.items()})
    versions = sorted(a["version"] for done in acked.values() for a in done)
    version, messages, rows = stored_row(database_url, "shared")
    switches = sum(1 for x, y in zip(result.stored, result.stored[1:], strict=False) if x.split()[0] != y.split()[0])
    print(f"\n{count} processes x {turns} turns on one session: acknowledged {result.acknowledged}, "
          f"lost {len(result.lost)}, duplicated {len(result.duplicated)}, out of order {result.out_of_order}, "
          f"failed {len(failed)}, final version {version}, switches between processes {switches}")
    assert not failed, failed[:3]
    assert result.acknowledged == count * turns
    assert not result.lost and not result.duplicated and not result.out_of_order
    assert result.unacknowledged_stored == 0
    assert versions == list(range(2, 2 + count * turns)), "every turn is one version, none shared"
    assert (version, messages, rows) == (1 + count * turns, 2 * count * turns, 2 * count * turns)
    assert stored_pairs_ok(database_url, "shared") == []


@pytest.mark.timeout(180)
def test_two_processes_on_one_session(database_url: str, tmp_path: Path) -> None:
    check_exactly_once(database_url, run_instances(database_url, tmp_path, 2, 25), 2, 25)


@pytest.mark.timeout(240)
def test_five_processes_on_one_session(database_url: str, tmp_path: Path) -> None:
    check_exactly_once(database_url, run_instances(database_url, tmp_path, 5, 12), 5, 12)


@pytest.mark.fault
@pytest.mark.timeout(240)
def test_two_processes_through_an_outage_keep_both_sides(cluster: Cluster, fault_db: str, tmp_path: Path) -> None:
    """Each instance spools its own turns while PostgreSQL is down (each has only its own view);
    the replays merge both after the restart, losing and repeating nothing."""
    workers = [Worker(fault_db, tmp_path / f"i{n}", name=f"i{n}") for n in range(2)]
    try:
        workers[0].create("shared")
        for n, worker in enumerate(workers):
            worker.loop("shared", f"i{n}")
        for worker in workers:
            worker.wait_acked(10)
        cluster.stop("immediate")
        for worker in workers:
            worker.wait_acked(len(worker.acked) + 15)
        cluster.start()
        replay_s = wait_until(lambda: all(spool_depth(w.data_dir) == 0 for w in workers), 60, "both spools drain")
        for worker in workers:
            worker.wait_acked(len(worker.acked) + 5)
            worker.stop_loop()
        assert all(worker.exit() == 0 for worker in workers)
    finally:
        for worker in workers:
            worker.reap()
    result = audit(fault_db, "shared", {w.name: [a["text"] for a in w.acked] for w in workers})
    spooled = {w.name: sum(1 for a in w.acked if a["backend"] == "spool") for w in workers}
    print(f"\ntwo processes through an outage: acknowledged {result.acknowledged} (spooled {spooled}), "
          f"lost {len(result.lost)}, duplicated {len(result.duplicated)}, replay {replay_s:.2f} s")
    assert all(n >= 10 for n in spooled.values())
    assert not result.lost and not result.duplicated and not result.out_of_order
    assert not [u for w in workers for u in w.unacked]
    assert stored_pairs_ok(fault_db, "shared") == []
