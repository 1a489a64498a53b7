"""Behaviour only PostgreSQL has: flat cost per save, schema creation races, corrupt rows, outages."""

from __future__ import annotations

import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from app.core.postgres_session_manager import SessionManager
from app.store.codec import CodecError
from app.store.schema import LATEST_VERSION
from tests.helpers import PYTHON, REPO, free_port, make_settings, subprocess_env

PROSE = ("Durable sessions keep every message of a conversation safe across restarts and outages. " * 8)[:595]


def history(n: int, tag: str = "") -> list:
    return [HumanMessage(f"{tag}{i} {PROSE}") if i % 2 == 0 else AIMessage(f"{tag}{i} {PROSE}") for i in range(n)]


def wal_bytes_per_save(manager: SessionManager, url: str, length: int, sessions: int = 15) -> float:
    states = {}
    for s in range(sessions):
        sid = f"wal-{length}-{s}"
        states[sid] = {"messages": history(length, sid), "tasks": [], "files": {}, "metadata": {}}
        manager.save_session(sid, states[sid], metadata={"user": "u"})
    for sid, state in states.items():  # warm-up turn: the next ones are steady state
        state["messages"] += history(2, f"warm-{sid}")
        manager.save_session(sid, state)
    with psycopg.connect(url, autocommit=True) as conn:
        best = float("inf")
        for attempt in range(3):  # a checkpoint during a run adds full-page images; keep the cleanest run
            start = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            for sid, state in states.items():
                state["messages"] += history(2, f"turn{attempt}-{sid}")
                assert manager.save_session(sid, state)
            end = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            diff = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0]
            best = min(best, float(diff) / sessions)
    return best


@pytest.mark.slow
def test_wal_per_save_is_flat_in_history_length(manager: SessionManager, database_url: str) -> None:
    short = wal_bytes_per_save(manager, database_url, 10)
    long = wal_bytes_per_save(manager, database_url, 1000)
    print(f"\nWAL bytes per save: H=10 {short:.0f}, H=1000 {long:.0f}, ratio {long / short:.2f}")
    assert long / short <= 1.5
    assert long < 4 * 2 * 700  # about two messages' worth, not the history


def test_a_save_appends_only_the_new_messages(manager: SessionManager, database_url: str) -> None:
    state = {"messages": history(40), "tasks": [], "files": {}, "metadata": {}}
    manager.save_session("s", state)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE before AS SELECT seq, xmin::text AS x FROM isotope_messages")
        state["messages"] += history(2, "new")
        result = manager.save("s", state)
        changed = conn.execute(
            "SELECT count(*) FROM isotope_messages m LEFT JOIN before b USING (seq)"
            " WHERE b.seq IS NULL OR b.x <> m.xmin::text").fetchone()[0]
    assert (result.appended, result.rewritten, changed) == (2, False, 2)


def test_a_new_process_continues_with_a_delta(manager: SessionManager, database_url: str, data_dir: Path) -> None:
    state = {"messages": history(30), "tasks": [], "files": {}, "metadata": {}}
    manager.save_session("s", state)
    other = SessionManager(make_settings(database_url, data_dir), use_postgres=True).open()
    try:
        loaded = other.load_session("s")
        loaded["messages"].append(HumanMessage("from the other process"))
        result = other.save("s", loaded)
    finally:
        other.close()
    assert (result.appended, result.version) == (1, 2)
    assert manager.load_session("s")["messages"][-1].content == "from the other process"


def test_concurrent_writer_is_detected_not_overwritten(manager: SessionManager, database_url: str,
                                                       data_dir: Path) -> None:
    state = {"messages": history(4), "tasks": [], "files": {}, "metadata": {}}
    manager.save_session("s", state)
    with SessionManager(make_settings(database_url, data_dir), use_postgres=True) as other:
        theirs = other.load_session("s")
        theirs["messages"].append(HumanMessage("theirs"))
        other.save_session("s", theirs)
    state["messages"].append(HumanMessage("mine"))
    result = manager.save("s", state)  # full-state save: the caller's list wins, found by a diff
    assert result.version == 3
    assert [m.content for m in manager.load_session("s")["messages"]][-1] == "mine"


@pytest.mark.multiprocess
def test_three_processes_racing_on_an_empty_database_all_succeed(empty_database_url: str, tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys
        from app.core.postgres_session_manager import SessionManager
        from app.config import load_settings
        manager = SessionManager(load_settings(), use_postgres=True).open()
        sys.stdin.readline()  # the parent releases all three at once
        ok = manager.save_session("race", {"messages": [], "tasks": [sys.argv[1]]})
        print("saved" if ok else "failed", flush=True)
        manager.close()
    """)
    procs = []
    for n in range(3):
        env = subprocess_env(empty_database_url, tmp_path / f"d{n}")
        procs.append(subprocess.Popen([PYTHON, "-c", script, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=REPO))
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert all(out.strip() == "saved" for out, _ in outputs), outputs
    with psycopg.connect(empty_database_url) as conn:
        version = conn.execute("SELECT version FROM isotope_sessions WHERE session_id = 'race'").fetchone()[0]
        schema = conn.execute("SELECT max(version) FROM isotope_schema_version").fetchone()[0]
    assert (version, schema) == (3, LATEST_VERSION)


def test_restore_reports_a_corrupt_row_and_restores_the_rest(manager: SessionManager, database_url: str) -> None:
    for n in range(3):
        manager.save_session(f"s{n}", {"messages": history(3), "tasks": []})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""UPDATE isotope_messages SET message = '{"$iso": "msg", "type": "human"}'
                        WHERE session_id = 's1' AND seq = 1""")
        conn.execute("""UPDATE isotope_sessions SET session_data = jsonb_set(session_data, '{tasks}',
                        '{"$iso": "dt", "v": "garbage"}') WHERE session_id = 's2'""")
    result = manager.restore_all_sessions()
    assert result["restored_count"] == 1
    assert result["failed_count"] == 2 and sorted(result["failed_session_ids"]) == ["s1", "s2"]
    assert all(e["error"] for e in result["errors"])



# Rows another tool or a bad migration could leave: (how, the reason's words).
DAMAGE = {
    "string": ("""UPDATE isotope_sessions SET session_data = '"a string"' WHERE session_id = %(sid)s""",
               "JSON string, not an object"),
    "array": ("UPDATE isotope_sessions SET session_data = '[1, 2]' WHERE session_id = %(sid)s",
              "JSON array, not an object"),
    "number": ("UPDATE isotope_sessions SET session_data = '42' WHERE session_id = %(sid)s",
               "JSON number, not an object"),
    "no-marker": ("UPDATE isotope_sessions SET session_data = session_data - 'messages' WHERE session_id = %(sid)s",
                  "no 'messages' marker"),
    "bad-message": ("""UPDATE isotope_messages SET message = '{"$iso": "msg"}' WHERE session_id = %(sid)s""",
                    "cannot be decoded"),
    "dangling-member": ("DELETE FROM isotope_session_members WHERE session_id = %(sid)s",
                        "member 'blob' is missing"),
}


def test_restore_goes_on_past_damaged_rows(manager: SessionManager, database_url: str, data_dir: Path) -> None:
    data = {"messages": history(2), "tasks": [], "blob": "x" * 5000}  # blob is stored out of line
    healthy = [f"ok-{n}" for n in range(3)]
    for sid in [*healthy, *DAMAGE]:
        manager.save_session(sid, data)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for sid, (statement, _) in DAMAGE.items():
            conn.execute(statement, {"sid": sid})
    with SessionManager(make_settings(database_url, data_dir), use_postgres=True) as fresh:  # nothing cached
        result = fresh.restore_all_sessions(include_data=True)
        assert sorted(result["sessions"]) == healthy and result["restored_count"] == 3
        assert result["failed_count"] == len(DAMAGE) and sorted(result["failed_session_ids"]) == sorted(DAMAGE)
        reasons = {e["session_id"]: e["error"] for e in result["errors"]}
        for sid, (_, words) in DAMAGE.items():
            assert words in reasons[sid] and repr(sid) in reasons[sid] and "\n" not in reasons[sid]
            with pytest.raises(CodecError, match=words):
                fresh.load_session(sid)
        assert fresh.load_session("ok-0") == data


def test_a_non_object_message_row_is_restored_as_stored(manager: SessionManager, database_url: str,
                                                        data_dir: Path) -> None:
    manager.save_session("scalar", {"messages": history(2)})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""UPDATE isotope_messages SET message = '"plain text"' WHERE session_id = 'scalar' AND seq = 0""")
    with SessionManager(make_settings(database_url, data_dir), use_postgres=True) as fresh:  # nothing cached
        result = fresh.restore_all_sessions(include_data=True)
    assert result["failed_count"] == 0 and result["sessions"]["scalar"]["messages"][0] == "plain text"


def test_outage_falls_back_to_files_within_two_seconds(data_dir: Path) -> None:
    url = f"postgresql://isotope:secret-pw@127.0.0.1:{free_port()}/isotope"
    settings = make_settings(url, data_dir)
    state = {"messages": history(3), "tasks": [{"t": 1}], "files": {}, "metadata": {}}
    with SessionManager(settings, use_postgres=True) as manager:
        started = time.perf_counter()
        assert manager.save_session("offline", state, metadata={"name": "n"}) is True
        elapsed = time.perf_counter() - started
        assert manager.load_session("offline") == state
        status = manager.test_connection()
        assert status["ok"] is False and status["error"] and "secret-pw" not in str(status)
        assert manager.status()["spool_depth"] == 1
    assert elapsed < 3.0
    code = ("from app.core.postgres_session_manager import SessionManager; from app.config import load_settings;"
            "m = SessionManager(load_settings(), use_postgres=True).open();"
            "d = m.load_session('offline'); print(len(d['messages']), d['tasks']); m.close()")
    out = subprocess.run([PYTHON, "-c", code], env=subprocess_env(url, data_dir), cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "3 [{'t': 1}]", out.stderr


def test_a_silent_server_is_given_up_on_after_the_connect_timeout(data_dir: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers: a hung server
    accepted = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"postgresql://isotope@127.0.0.1:{listener.getsockname()[1]}/isotope"
        with SessionManager(make_settings(url, data_dir), use_postgres=True) as manager:
            started = time.perf_counter()
            assert manager.save_session("hung", {"messages": history(2)}) is True
            elapsed = time.perf_counter() - started
            assert manager.load_session("hung") == {"messages": history(2)}
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
    print(f"\nsave against a silent server acknowledged after {elapsed:.2f} s")
    assert elapsed < 6.0


def test_replay_after_the_server_comes_back(manager: SessionManager, database_url: str, data_dir: Path,
                                             pg_server) -> None:
    """The spool written during an outage reaches PostgreSQL once it answers (same manager)."""
    state = {"messages": history(2), "tasks": []}
    manager.save_session("s", state)
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        admin.execute("ALTER DATABASE " + psycopg.sql.Identifier(dbname).as_string(admin) + " ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
        state["messages"].append(HumanMessage("during the outage"))
        assert manager.save_session("s", state) is True
        assert manager.status()["fallback_active"] and manager.status()["spool_depth"] == 1
        admin.execute("ALTER DATABASE " + psycopg.sql.Identifier(dbname).as_string(admin) + " ALLOW_CONNECTIONS true")
    deadline = time.monotonic() + 30
    while manager.status()["spool_depth"] and time.monotonic() < deadline:
        manager.store.health.wake.set()
        time.sleep(0.05)  # polling a condition with a deadline, not a fixed wait
    assert manager.status()["spool_depth"] == 0 and not manager.fallback_active
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT count(*), max(version) FROM isotope_messages m JOIN isotope_sessions s "
                            "USING (session_id) WHERE session_id = 's'").fetchone()
    assert rows == (3, 2)


def test_a_saturated_pool_is_busy_not_an_outage(database_url: str, data_dir: Path) -> None:
    from app.errors import StoreBusy

    settings = make_settings(database_url, data_dir, **{"store.pool_min_size": 1, "store.pool_max_size": 1,
                                                        "store.connect_timeout_s": 0.5})
    with SessionManager(settings, use_postgres=True) as manager:
        manager.save_session("held", {"messages": []})
        outcome: list[object] = []
        with manager.lock("held"):  # the lock holds the pool's only connection
            worker = threading.Thread(target=lambda: outcome.append(_try_save(manager)))
            worker.start()
            worker.join(timeout=30)
        assert len(outcome) == 1 and isinstance(outcome[0], StoreBusy), outcome
        assert manager.fallback_active is False and manager.status()["spool_depth"] == 0
        assert manager.save_session("other", {"messages": []}) is True  # the connection is back


def _try_save(manager: SessionManager) -> object:
    try:
        return manager.save("other", {"messages": []})
    except Exception as exc:  # the test inspects which error it was
        return exc


def test_the_spool_emptiness_shortcut_never_hides_a_record(tmp_path: Path) -> None:
    import os

    from app.store.outage.record import DeleteRecord
    from app.store.outage.spool import Spool

    spool = Spool(tmp_path)
    spool.open()
    old = time.time_ns() - 10_000_000_000
    os.utime(spool.root, ns=(old, old))
    assert spool.maybe_pending() is False and spool._empty_at == old  # remembered: one stat from now on
    spool.append(DeleteRecord(session_id="s", write_id="w", acked_at="2026-01-01T00:00:00+00:00", soft=True))
    assert spool.maybe_pending() is True and spool.has_pending("s") and not spool.has_pending("t")
    for path in spool.pending():
        spool.remove(path)
    assert spool.maybe_pending() is False
    assert spool._empty_at != os.stat(spool.root).st_mtime_ns  # a fresh mtime is not trusted yet
