"""Issue 13 item 2: another OS user can neither connect to the embedded PostgreSQL nor read a session.

The other user is ``nobody``, really: its attempts run in child processes under ``setpriv`` (when
the tests run as root) and must fail with "Permission denied". No directory above ``data_dir``
changes mode, and whatever Isotope writes is private whatever the umask.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from psycopg.conninfo import conninfo_to_dict

from app.config import Settings, load_settings
from app.core.postgres_session_manager import SessionManager
from app.errors import StoreUnavailable
from app.store.embedded import EmbeddedPostgres
from app.store.outage.record import DeleteRecord
from app.store.outage.spool import Spool
from tests.helpers import PYTHON, REPO

ROOT = os.geteuid() == 0
CONNECT = "import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=5); print('CONNECTED')"
LONG_NAME = "d" * 90  # pushes <data_dir>/postgres/.s.PGSQL.5432 past the 107 bytes a socket path may have



def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as the user nobody (no supplementary groups). Only root can switch users; the
    suite runs as root in CI, and without root the mode checks alone stand for it."""
    nobody = pwd.getpwnam("nobody")
    return subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                           *argv], capture_output=True, text=True, timeout=60, cwd="/")


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A directory every user may enter but not list (0711, as home directories often are): only
    data_dir itself must be private, and this mode must stay as it is."""
    path = Path(tempfile.mkdtemp(prefix="isotope-local-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """umask 0: files come out private because Isotope asks for it, not because of the umask."""
    old = os.umask(0)
    yield
    os.umask(old)


def file_settings(base: Path, data_dir: Path) -> Settings:
    config = base / "config.yaml"
    config.write_text("postgres_sessions: false\n")
    return load_settings(path=config, environ={"ISOTOPE_DATA_DIR": str(data_dir)})


def parent_modes(path: Path) -> dict[Path, int]:
    return {p: p.stat().st_mode for p in path.parents}


def assert_private_tree(data_dir: Path) -> None:
    """data_dir 0700 (0710 with the server user's group when root); no file or directory below it
    that group or others may read or write."""
    st = data_dir.stat()
    assert stat.S_IMODE(st.st_mode) in (0o700, 0o710), oct(st.st_mode)
    if stat.S_IMODE(st.st_mode) == 0o710:
        assert st.st_gid == pwd.getpwnam("pgserver").pw_gid
    for parent, dirs, files in os.walk(data_dir):
        for name in dirs:
            mode = stat.S_IMODE(os.lstat(os.path.join(parent, name)).st_mode)
            assert mode & 0o077 == 0, (os.path.join(parent, name), oct(mode))
        for name in files:
            path = os.path.join(parent, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            assert mode & 0o077 == 0, (path, oct(mode))


@pytest.mark.slow
@pytest.mark.parametrize("long_path", [False, True], ids=["socket-in-cluster-dir", "socket-path-too-long"])
def test_another_user_cannot_connect_to_the_embedded_server(open_base: Path, loose_umask: None,
                                                            long_path: bool) -> None:
    base = open_base / LONG_NAME if long_path else open_base
    base.mkdir(mode=0o711, exist_ok=True)
    base.chmod(0o711)
    data_dir = base / "data"
    before = parent_modes(data_dir)
    embedded = EmbeddedPostgres(data_dir, cleanup="delete")
    url = embedded.start()
    socket_dir = Path(str(conninfo_to_dict(url)["host"]))
    try:
        if long_path:
            assert not str(socket_dir).startswith(str(data_dir))
        # the owner (this process) gets in; nobody does not, by the URL or the socket itself
        assert subprocess.run([PYTHON, "-c", CONNECT, url], capture_output=True, text=True,
                              cwd=REPO).stdout.strip() == "CONNECTED"
        if ROOT:
            denied = as_nobody(PYTHON, "-c", CONNECT, url)
            assert "CONNECTED" not in denied.stdout and "Permission denied" in denied.stderr, denied.stderr
            assert as_nobody("test", "-e", str(socket_dir / ".s.PGSQL.5432")).returncode != 0  # cannot see it
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700, oct(socket_dir.stat().st_mode)
        assert parent_modes(data_dir) == before, "a directory above data_dir changed mode"
        assert_private_tree(data_dir)
    finally:
        embedded.stop()
    assert parent_modes(data_dir) == before
    if long_path:
        assert not socket_dir.exists()  # the fallback socket directory goes with the server


def test_session_copies_and_spool_records_are_private(open_base: Path, loose_umask: None) -> None:
    data_dir = open_base / "data"
    before = parent_modes(data_dir)
    with SessionManager(file_settings(open_base, data_dir), use_postgres=False) as files:
        files.save_session("secret-talk", {"messages": [HumanMessage("my bank PIN is 1234")]})
    spool = Spool(data_dir)
    spool.open()
    record = spool.append(DeleteRecord(session_id="secret-talk", write_id="w1", acked_at="PIN 1234", soft=True))
    spool.quarantine(record, "test: set aside")

    assert_private_tree(data_dir)
    assert parent_modes(data_dir) == before
    copies = list((data_dir / "sessions").glob("*.json"))
    assert copies and list((data_dir / "spool" / "failed").iterdir())
    for path in (*copies, data_dir / "spool" / "failed" / record.name):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        if ROOT:
            denied = as_nobody("cat", str(path))
            assert denied.returncode != 0 and "Permission denied" in denied.stderr
            assert "1234" not in denied.stdout


def test_an_existing_loose_store_directory_is_tightened(open_base: Path) -> None:
    """Directories an older version created 0755 are closed at the next open."""
    data_dir = open_base / "data"
    for sub in ("sessions", "spool", "spool/failed"):
        (data_dir / sub).mkdir(parents=True, mode=0o755)
        (data_dir / sub).chmod(0o755)
    with SessionManager(file_settings(open_base, data_dir), use_postgres=False) as files:
        files.save_session("s", {"messages": []})
    Spool(data_dir).open()
    for sub in ("sessions", "spool", "spool/failed"):
        assert stat.S_IMODE((data_dir / sub).stat().st_mode) == 0o700, sub


def test_a_parent_closed_to_the_server_user_is_reported_not_opened(open_base: Path) -> None:
    """As root the server runs as the pgserver user; a parent it cannot enter is named, not opened."""
    closed = open_base / "closed"
    closed.mkdir(mode=0o700)
    embedded = EmbeddedPostgres(closed / "data", cleanup="delete")
    try:
        if ROOT:
            with pytest.raises(StoreUnavailable, match=r"cannot enter .*closed.*never changes the modes"):
                embedded.start()
        else:  # the server runs as this user, who may enter its own 0700 directory
            embedded.start()
    finally:
        embedded.stop()
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700
