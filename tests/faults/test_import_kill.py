"""kill -9 of ``isotope sessions import`` while it writes a long session: no session is left half
written, and running the import again completes it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from app.core.transfer import COMMIT_SESSIONS
from tests.helpers import PYTHON, REPO, subprocess_env

pytestmark = [pytest.mark.fault, pytest.mark.slow]

BIG = 150_000  # messages of the long session: its write takes dozens of INSERTs of 5,000


def line(session_id: str, messages: int) -> str:
    return json.dumps({
        "format": "isotope.session", "format_version": 1, "session_id": session_id, "version": 7,
        "created_at": "2025-01-01T00:00:00+00:00", "last_updated": "2025-01-02T00:00:00+00:00",
        "metadata": {"n": messages}, "data": {"tasks": [messages]},
        "messages": [{"$iso": "msg", "type": "human", "content": f"{session_id} #{i}"} for i in range(messages)],
    }) + "\n"


def writing_messages(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'isotope import' "
                       "AND state = 'active' AND query LIKE '%%INSERT INTO isotope_messages%%'").fetchone()
    return bool(row and row[0])


def importer_gone(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'isotope import'").fetchone()
    return bool(row and row[0] == 0)


def poll(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def stored(conn: psycopg.Connection) -> dict[str, tuple[int, int, int]]:
    """Per session: the marker's count, the message rows, and the version."""
    rows = conn.execute("""
        SELECT s.session_id, (s.session_data #>> '{messages,count}')::int,
               (SELECT count(*) FROM isotope_messages m WHERE m.session_id = s.session_id), s.version
          FROM isotope_sessions s""").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


@pytest.mark.timeout(300)
def test_kill_9_mid_import_leaves_no_half_session(database_url: str, data_dir: Path, tmp_path: Path) -> None:
    # One full batch commits before the long session; the long one's batch dies with the process.
    sizes = {f"small-{i:03}": 3 for i in range(COMMIT_SESSIONS + 5)} | {"big": BIG} | \
        {f"after-{i}": 2 for i in range(5)}
    export = tmp_path / "sessions.jsonl"
    export.write_text("".join(line(sid, n) for sid, n in sizes.items()))
    env = subprocess_env(database_url, data_dir)
    with psycopg.connect(database_url, autocommit=True) as conn:
        proc = subprocess.Popen([PYTHON, "-m", "app.cli.main", "sessions", "import", str(export)], env=env,
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Once the first batch is committed, the next one holds the long session's many INSERTs.
            assert poll(lambda: len(stored(conn)) >= COMMIT_SESSIONS and writing_messages(conn), 120), \
                "the import never reached its second batch"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        assert poll(lambda: importer_gone(conn), 30), "the importer's backend outlived it"
        after_kill = stored(conn)
        print(f"\nkilled mid-import: {len(after_kill)} of {len(sizes)} sessions were committed")
        assert "big" not in after_kill and len(after_kill) == COMMIT_SESSIONS
        for sid, (count, rows, version) in after_kill.items():
            assert count == rows == sizes[sid] and version == 7, sid

        again = subprocess.run([PYTHON, "-m", "app.cli.main", "sessions", "import", str(export)], env=env,
                               cwd=REPO, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr
        assert f"imported {len(sizes) - len(after_kill)}, skipped {len(after_kill)}, failed 0" in again.stdout
        final = stored(conn)
        assert {sid: v[:2] for sid, v in final.items()} == {sid: (n, n) for sid, n in sizes.items()}
