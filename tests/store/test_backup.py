"""The README's backup procedure: ``pg_dump`` of the database, ``pg_restore`` of Isotope's objects
into a fresh database, and every session loads as it was (and takes new turns)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from app.core.postgres_session_manager import SessionManager
from tests.conftest import PgServer
from tests.helpers import make_settings
from tests.store.test_transfer import assert_same_sessions, seed

pytestmark = pytest.mark.slow


def tool(pg_server: PgServer, name: str) -> str:
    """The server's own client tools when it is the embedded one, else those on PATH."""
    if pg_server.bin_dir is not None and (pg_server.bin_dir / name).exists():
        return str(pg_server.bin_dir / name)
    found = shutil.which(name)
    assert found, f"{name} is needed for the backup test (apt-get install postgresql-client)"
    return found


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pg_dump_and_restore_of_isotopes_objects(manager: SessionManager, database_url: str,
                                                 empty_database_url: str, pg_server: PgServer,
                                                 tmp_path: Path) -> None:
    ids = list(seed(manager).values())
    dump = tmp_path / "isotope.dump"
    run(tool(pg_server, "pg_dump"), "--format=custom", f"--file={dump}", f"--dbname={database_url}")
    # As the README says: keep the entries of Isotope's objects (tables, views, functions, indexes,
    # triggers, their data), all named isotope_*, and restore those.
    entries = run(tool(pg_server, "pg_restore"), "--list", str(dump)).splitlines()
    listing = tmp_path / "isotope.list"
    kept = [e for e in entries if "isotope_" in e]
    listing.write_text("\n".join(kept) + "\n")
    assert any("FUNCTION" in e for e in kept) and any("TABLE DATA" in e for e in kept)
    print(f"\nrestoring {len(kept)} of the dump's {len(entries)} entries")
    run(tool(pg_server, "pg_restore"), "--no-owner", "--exit-on-error", f"--use-list={listing}",
        f"--dbname={empty_database_url}", str(dump))

    (tmp_path / "restored").mkdir()
    with SessionManager(make_settings(empty_database_url, tmp_path / "restored"), use_postgres=True) as restored:
        assert restored.test_connection()["schema_version"] == manager.test_connection()["schema_version"]
        assert restored.count_sessions(include_inactive=True) == manager.count_sessions(include_inactive=True)
        assert restored.restore_all_sessions()["failed_count"] == 0
        assert_same_sessions(manager, restored, ids)
        plain = next(sid for sid in ids if sid.startswith("plain-"))
        data = restored.load_session(plain)
        assert data is not None
        restored.save_session(plain, {**data, "messages": [*data["messages"], HumanMessage("after"),
                                                           AIMessage("restore")]})
        assert len(restored.load_session(plain)["messages"]) == len(data["messages"]) + 2  # type: ignore[index]
