"""What the spool directory may hold after real-world accidents: damaged files, a clock that stepped back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from app.core.postgres_session_manager import SessionManager
from tests.faults.cluster import Cluster
from tests.helpers import free_port, make_settings

pytestmark = [pytest.mark.fault, pytest.mark.slow]



def turns(n: int, prefix: str = "t") -> list:
    return [m for i in range(n) for m in (HumanMessage(f"{prefix}{i}"), AIMessage(f"reply {prefix}{i}"))]


@pytest.mark.timeout(120)
def test_a_damaged_spool_file_is_set_aside_and_the_rest_replays(cluster: Cluster, fault_db: str,
                                                                data_dir: Path) -> None:
    settings = make_settings(fault_db, data_dir, **{"store.spool_replay_interval_s": 600})
    with SessionManager(settings, use_postgres=True) as manager:
        manager.save("kept", {"messages": turns(1)})
        cluster.stop("immediate")
        for n in (2, 3, 4):
            assert manager.save("kept", {"messages": turns(n)}).backend == "spool"
        # A file that is not a record (a disk that lost its content, a stray editor file).
        pending = sorted((data_dir / "spool").glob("*.json"))
        damaged = pending[0].with_name(f"{1:020d}" + pending[0].name[20:])  # sorts first, same session
        damaged.write_text('{"kind": "save", "session_id"', encoding="utf-8")
        cluster.start()
        assert manager.pg.probe()
        manager.store.replayer.step()
        status = manager.status()
        assert status["spool_depth"] == 0 and status["last_replay"]["failed"] == 1
        assert (data_dir / "spool" / "failed" / damaged.name).exists()
        assert "cannot be read" in (data_dir / "spool" / "failed" / damaged.with_suffix(".reason.txt").name).read_text()
        stored = manager.load("kept")
        assert stored.backend == "postgres"
        assert [m.content for m in stored.data["messages"]] == [m.content for m in turns(4)]


@pytest.mark.timeout(120)
def test_spool_order_survives_a_clock_that_stepped_back(cluster: Cluster, fault_db: str, data_dir: Path) -> None:
    """A record left by a process whose clock ran ahead (the clock was corrected since): writes made
    after it must still sort, and replay, after it."""
    settings = make_settings(fault_db, data_dir, **{"store.spool_replay_interval_s": 600})
    with SessionManager(settings, use_postgres=True) as first:
        first.save("clock", {"messages": turns(1)})
        cluster.stop("immediate")
        first.save("clock", {"messages": turns(2)})
    [record] = sorted((data_dir / "spool").glob("*.json"))
    ahead = record.with_name(f"{int(record.name.split('-')[0]) + 3600 * 10**9:020d}" + record.name[20:])
    record.rename(ahead)  # as written by a clock an hour ahead
    with SessionManager(settings, use_postgres=True) as second:  # a later process, clock now right
        second.test_connection()  # PostgreSQL still down
        assert second.fallback_active
        second.save("clock", {"messages": turns(3)})
        names = sorted(p.name for p in (data_dir / "spool").glob("*.json"))
        assert names[0] == ahead.name and len(names) == 2
        cluster.start()
        assert second.pg.probe()
        second.store.replayer.step()
        assert second.status()["spool_depth"] == 0
        stored = second.load("clock")
        assert [m.content for m in stored.data["messages"]] == [m.content for m in turns(3)]
        records = [json.loads(p.read_text()) for p in (data_dir / "spool" / "failed").glob("*.json")]
        assert records == []


def test_temporary_files_of_killed_writers_are_removed_at_open(data_dir: Path) -> None:
    """What kill -9 between writing a record and renaming it leaves: a temporary file, never
    acknowledged. The next manager on the data dir removes it (and leaves live writers' alone)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid, live_pid = int(dead.stdout), os.getpid()
    (data_dir / "spool").mkdir()
    (data_dir / "sessions").mkdir()
    leftovers = [data_dir / "spool" / f".{1:020d}-abc-{dead_pid}-000000.json.tmp",
                 data_dir / "sessions" / f"abc.tmp{dead_pid}"]
    in_flight = [data_dir / "spool" / f".{2:020d}-abc-{live_pid}-000001.json.tmp",
                 data_dir / "sessions" / f"abc.tmp{live_pid}"]
    for path in leftovers + in_flight:
        path.write_text("{", encoding="utf-8")
    url = f"postgresql://isotope@127.0.0.1:{free_port()}/isotope"
    with SessionManager(make_settings(url, data_dir, **{"store.connect_timeout_s": 0.5}), use_postgres=True):
        assert not any(path.exists() for path in leftovers)
        assert all(path.exists() for path in in_flight)
