"""Isotope through PgBouncer in transaction pooling mode (deploy/pgbouncer/pgbouncer.ini).

PgBouncer lends a PostgreSQL backend for one transaction or one autocommit statement, then to
another client; its pool here has 2 backends for more client connections than that, so any
state Isotope kept on a backend between statements (a session-level lock, a prepared statement,
a SET) would be found missing or left behind for someone else.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from app.config import Settings, load_settings
from app.core.postgres_session_manager import SessionManager
from app.errors import IsotopeError
from tests.faults.harness import Worker, audit, stored_pairs_ok, stored_row
from tests.ha.conftest import Bounced, isotope_through
from tests.ha.pgbouncer import POOL_SIZE, Traffic, keeps_prepared_statements, version

pytestmark = [pytest.mark.ha, pytest.mark.slow]

# Engine turns hold a per-session lock for the turn. While that lock is PostgreSQL's
# session-level advisory lock it stays on whichever backend took it, and PgBouncer hands that
# backend to other clients: the unlock goes elsewhere and the session stays locked. The lease row
# with a fencing token (being landed) replaces it; these tests need it.
NEEDS_LEASE = pytest.mark.xfail(
    strict=True, raises=(AssertionError, IsotopeError),
    reason="needs the session lease row: an advisory lock does not survive transaction pooling")


def settings_through(bounced: Bounced, data_dir: Path, **store: Any) -> Settings:
    config = isotope_through(bounced, data_dir)
    config["store"].update(store)
    path = data_dir / "config.yaml"
    path.write_text(json.dumps(config))
    return load_settings(path, environ={})


def engine_config(bounced: Bounced, data_dir: Path) -> dict[str, Any]:
    """The deploy file for an engine process; a turn waits at most 10 s for another's turn."""
    config = isotope_through(bounced, data_dir)
    config["store"]["lock_timeout_s"] = 10
    return config


def until_looped(workers: list[Worker], timeout: float) -> None:
    """Wait for every worker's loop to end; fail at the first turn that was not acknowledged."""
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending:
        for worker in workers:
            assert not worker.unacked, f"{worker.name}: a turn failed: {worker.unacked[0]}"
        worker = pending[0]
        try:
            worker.expect("looped", timeout=0.5)
            pending.pop(0)
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def conversation(n: int) -> dict[str, Any]:
    messages = [HumanMessage(f"q{i}") if i % 2 == 0 else AIMessage(f"a{i}") for i in range(n)]
    return {"messages": messages, "tasks": [{"id": 1, "title": "t"}], "files": {"a.txt": "x" * 5000}}


def test_the_store_works_through_pgbouncer_with_backends_shared(bounced: Bounced, data_dir: Path) -> None:
    """Saves, loads, lists, counts and deletes from 6 threads: 6 client connections on 2 backends."""
    settings = settings_through(bounced, data_dir, pool_max_size=6, pool_min_size=6)
    assert settings.store.prepare_threshold is None  # what deploy/isotope/config-pgbouncer.yaml says
    errors: list[BaseException] = []
    with SessionManager(settings, use_postgres=True) as manager:
        assert manager.test_connection()["ok"] is True

        def client(t: int) -> None:
            try:
                for s in range(5):
                    sid = f"t{t}-s{s}"
                    data = conversation(2)
                    assert manager.save_session(sid, data, metadata={"thread": t}) is True
                    for n in range(4, 12, 2):  # appends: the delta path, one statement each
                        data = conversation(n)
                        assert manager.save_session(sid, data) is True
                    assert manager.load_session(sid) == data
                    assert manager.session_info(sid)["version"] == 5
            except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors[:3]
        assert manager.count_sessions() == 30
        assert len(manager.list_sessions(limit=100)) == 30
        assert manager.delete_session("t0-s0") is True
        assert manager.count_sessions() == 29
        # Forgotten by this process, a session is read back whole from PostgreSQL, and saved on
        # the locked path (the row locked in a transaction, which PgBouncer keeps on one backend).
        assert manager.pg is not None
        manager.pg.forget("t1-s1")
        assert manager.load_session("t1-s1") == conversation(10)
        manager.pg.forget("t1-s1")
        assert manager.save_session("t1-s1", conversation(12)) is True
        assert manager.load_session("t1-s1") == conversation(12)
    pools = [p for p in bounced.bouncer.show("pools", "postgres") if p["database"] == bounced.dbname]
    servers = [s for s in bounced.bouncer.show("servers", "postgres") if s["database"] == bounced.dbname]
    assert pools and pools[0]["pool_mode"] == "transaction"
    assert 1 <= len(servers) <= POOL_SIZE, servers  # 6 clients really shared at most 2 backends
    with psycopg.connect(bounced.direct_url) as conn:  # and PostgreSQL itself holds it all
        row = conn.execute("SELECT count(*) FILTER (WHERE is_active), count(*) FROM isotope_sessions").fetchone()
    assert row == (29, 30)


def test_server_side_prepared_statements_need_prepare_threshold_null_before_pgbouncer_1_21(
        bounced: Bounced, data_dir: Path) -> None:
    """Debian 12's PgBouncer (1.18) does not carry prepared statements from one backend to another:
    with psycopg preparing statements, saves from several threads fail (a statement prepared on one
    backend is missing, or already there under the same name, on the next), which is why
    deploy/isotope/config-pgbouncer.yaml sets store.prepare_threshold: null."""
    settings = settings_through(bounced, data_dir, prepare_threshold=0, pool_max_size=4, pool_min_size=4)
    failures: list[str] = []

    def client(t: int) -> None:
        for n in range(150):  # until the first failure; a few usually suffice
            if failures:
                return
            try:
                manager.save_session(f"p{t}-{n}", conversation(2))
                manager.load_session(f"p{t}-{n}")
            except IsotopeError as exc:
                failures.append(str(exc))

    with Traffic(bounced.url), SessionManager(settings, use_postgres=True) as manager:
        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    if keeps_prepared_statements():
        pytest.fail(f"PgBouncer {version()} keeps prepared statements: update the deploy files' advice")
    assert any("prepared statement" in f for f in failures), failures[:3]


@NEEDS_LEASE
@pytest.mark.multiprocess
@pytest.mark.timeout(180)
def test_engine_turns_through_pgbouncer(bounced: Bounced, tmp_path: Path) -> None:
    config = engine_config(bounced, tmp_path / "engine")
    with Traffic(bounced.url) as traffic, Worker("", tmp_path / "engine", name="engine", config=config) as worker:
        worker.create("pooled")
        worker.loop("pooled", "T", count=30)
        until_looped([worker], 120)
        assert worker.exit() == 0
    assert traffic.statements > 30  # other clients really shared the backends meanwhile
    assert not worker.unacked, worker.unacked[:3]
    assert [a["backend"] for a in worker.acked] == ["postgres"] * 30
    result = audit(bounced.direct_url, "pooled", {"engine": [a["text"] for a in worker.acked]})
    assert result.acknowledged == 30 and not result.lost and not result.duplicated
    assert stored_row(bounced.direct_url, "pooled") == (31, 60, 60)


@NEEDS_LEASE
@pytest.mark.multiprocess
@pytest.mark.timeout(240)
def test_two_processes_on_one_session_through_pgbouncer_exactly_once(bounced: Bounced, tmp_path: Path) -> None:
    turns = 20
    workers = [Worker("", tmp_path / f"i{n}", name=f"i{n}", config=engine_config(bounced, tmp_path / f"i{n}"))
               for n in range(2)]
    try:
        with Traffic(bounced.url):
            workers[0].create("shared")
            for n, worker in enumerate(workers):
                worker.loop("shared", f"i{n}", count=turns)
            until_looped(workers, 180)
            assert all(worker.exit() == 0 for worker in workers)
    finally:
        for worker in workers:
            worker.reap()
    failed = [u for w in workers for u in w.unacked]
    result = audit(bounced.direct_url, "shared", {w.name: [a["text"] for a in w.acked] for w in workers})
    versions = sorted(a["version"] for w in workers for a in w.acked)
    print(f"\n2 processes x {turns} turns on one session through PgBouncer: acknowledged {result.acknowledged}, "
          f"lost {len(result.lost)}, duplicated {len(result.duplicated)}, failed {len(failed)}")
    assert not failed, failed[:3]
    assert result.acknowledged == 2 * turns
    assert not result.lost and not result.duplicated and not result.out_of_order
    assert versions == list(range(2, 2 + 2 * turns)), "every turn is one version, none shared"
    assert stored_row(bounced.direct_url, "shared") == (1 + 2 * turns, 4 * turns, 4 * turns)
    assert stored_pairs_ok(bounced.direct_url, "shared") == []
