"""The embedded PostgreSQL: a real PostgreSQL 16 from the ``pgserver`` wheel, under the data dir.

We use the wheel's binaries and run them ourselves (``initdb`` on first use, ``pg_ctl start`` on a
Unix socket only, no TCP port) because pgserver's own start-up is unsafe for a server holding other
people's conversations: the cluster trusts every local connection, and when running as root
pgserver makes every directory above the cluster world-readable and, for long paths, puts the
socket in a 0777 directory, so any local user could log in as the superuser.

Here, no other OS user can connect or read:

* ``data_dir`` is 0700 and every file Isotope writes in it 0600 (:mod:`app.store.private_files`);
  no directory above it is ever changed.
* The socket lives in a private directory: the cluster directory itself (0700, made by initdb),
  or, when that path is too long for a Unix socket, a fresh ``mkdtemp`` directory (0700). Its
  owner and mode are checked before every start and join; a server whose socket other users can
  reach is refused. The socket itself is 0700 too (``unix_socket_permissions``).
* PostgreSQL refuses to run as root. As root, the cluster belongs to the unprivileged system user
  ``pgserver`` (created if missing, as pgserver did), and ``data_dir`` is 0710 with that user's
  group: it may traverse to the cluster, nothing more. If a directory above ``data_dir`` or the
  binaries is closed to that user, start-up fails saying so instead of opening it up.

Several processes on one data dir share one server: a ``flock`` serialises start and stop, and
``postgres.users`` lists the processes using it; the last one to leave stops the server (dead
processes are pruned, so a killed process does not keep it up forever). Data survives restarts.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from app.errors import StoreUnavailable
from app.store.private_files import open_private, private_dir, write_private

log = logging.getLogger("isotope.store.embedded")

DATABASE = "isotope"
SYSTEM_USER = "pgserver"  # the name pgserver used: clusters it made keep working
SOCKET_NAME = ".s.PGSQL.5432"
MAX_SOCKET_PATH = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
START_TIMEOUT_S = 60

# One count per cluster and process: several managers in one process share one registration.
_users: dict[Path, int] = {}
_users_lock = threading.Lock()


def bin_dir() -> Path:
    """The PostgreSQL binaries shipped in the ``pgserver`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise StoreUnavailable("the embedded PostgreSQL needs the pgserver package; pip install pgserver")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _pgserver() -> Any:
    """The pgserver module itself (tests use its helpers); Isotope only uses its binaries."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"isotope-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``<data_dir>/postgres``, started on demand.

    ``cleanup``: ``"stop"`` (the last process using it stops the server, the data stays), ``None``
    (leave it running) or ``"delete"`` (throwaway clusters in tests: stop and remove it).
    """

    def __init__(self, data_dir: Path, cleanup: str | None = "stop", database: str = DATABASE) -> None:
        if cleanup not in ("stop", "delete", None):
            raise ValueError(f"cleanup must be 'stop', 'delete' or None, not {cleanup!r}")
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "postgres"
        self.cleanup = cleanup
        self.database = database
        self.socket_dir: Path | None = None
        self.start_seconds: float | None = None
        self.initialised: bool = False
        self._user: pwd.struct_passwd | None = None

    # ------------------------------------------------------------------ start and join

    def start(self) -> str:
        """Start (or join) the cluster; return a libpq connection string for Isotope's database."""
        if self.socket_dir is not None:
            return self.url()
        started = time.perf_counter()
        try:
            self._user = _server_user()
            self._prepare_data_dir()
            with self._flock():
                self.initialised = not (self.pgdata / "PG_VERSION").exists()
                if self.initialised:
                    self._initdb()
                socket_dir = self._running_socket_dir() or self._start_server()
                self._check_private(socket_dir)
                self._register()
        except StoreUnavailable:
            raise
        except (OSError, subprocess.SubprocessError) as exc:
            raise StoreUnavailable(
                f"the embedded PostgreSQL in {self.pgdata} did not start ({type(exc).__name__}: {exc}); "
                f"see {self.pgdata / 'log'} and {self._ctl_log}") from exc
        self.socket_dir = socket_dir
        self._ensure_database()
        self.start_seconds = time.perf_counter() - started
        log.info("embedded PostgreSQL ready in %.2f s (%s) at %s", self.start_seconds,
                 "new cluster" if self.initialised else "existing cluster", self.pgdata)
        return self.url()

    def url(self, database: str | None = None) -> str:
        if self.socket_dir is None:
            raise StoreUnavailable("the embedded PostgreSQL is not started")
        return make_conninfo(host=str(self.socket_dir), user="postgres", dbname=database or self.database)

    def admin_url(self) -> str:
        return self.url("postgres")

    @property
    def _ctl_log(self) -> Path:
        return self.data_dir / "postgres-ctl.log"

    def _prepare_data_dir(self) -> None:
        if self._user is None:
            private_dir(self.data_dir)
            return
        # The server's user must traverse data_dir to reach its cluster: its group may execute.
        private_dir(self.data_dir, 0o710)
        st = self.data_dir.stat()
        if st.st_uid == os.geteuid() and (st.st_gid != self._user.pw_gid or not st.st_mode & stat.S_IXGRP):
            os.chown(self.data_dir, -1, self._user.pw_gid)
            self.data_dir.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXGRP)
        for target in (self.pgdata, bin_dir() / "postgres", bin_dir().parent / "lib"):
            _check_reachable(target, self._user)

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        fd = open_private(self.data_dir / "postgres.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _run(self, program: str, *args: str, timeout: float = START_TIMEOUT_S + 30) -> None:
        # Output goes to a file, never a pipe: the server inherits pg_ctl's descriptors and would
        # hold a pipe open after pg_ctl exits.
        fd = open_private(self._ctl_log, os.O_WRONLY | os.O_APPEND)
        try:
            kwargs: dict[str, Any] = {}
            if self._user is not None:
                kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
            subprocess.run([str(bin_dir() / program), *args], stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                           check=True, timeout=timeout, cwd=self.pgdata, **kwargs)
        except subprocess.CalledProcessError as exc:
            raise StoreUnavailable(f"{program} failed with status {exc.returncode}; see {self._ctl_log} "
                                   f"and {self.pgdata / 'log'}") from exc
        finally:
            os.close(fd)

    def _initdb(self) -> None:
        private_dir(self.pgdata)
        if self._user is not None:
            os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "--auth-local=trust", "--encoding=utf8",
                  "-U", "postgres")

    def _running_socket_dir(self) -> Path | None:
        """The socket directory of a server already running on this cluster, if any."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 8 or not lines[0].strip().isdigit() or lines[7].strip() != "ready":
            return None
        if not _pid_alive(int(lines[0])):
            return None
        return Path(lines[4].strip()) if lines[4].strip() else None

    def _start_server(self) -> Path:
        socket_dir = self.pgdata
        if len(os.fsencode(socket_dir / SOCKET_NAME)) > MAX_SOCKET_PATH:
            socket_dir = Path(tempfile.mkdtemp(prefix="isotope-pg-"))  # 0700, a fresh name: nothing planted
            if self._user is not None:
                os.chown(socket_dir, self._user.pw_uid, self._user.pw_gid)
        self._check_private(socket_dir)
        options = f"-c listen_addresses='' -k {shlex.quote(str(socket_dir))} -c unix_socket_permissions=0700"
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.pgdata / "log"), "-o", options,
                  "-w", "-t", str(START_TIMEOUT_S), "start")
        return socket_dir

    def _check_private(self, socket_dir: Path) -> None:
        """Refuse a socket directory another user could reach (or that is not what it seems)."""
        owner = self._user.pw_uid if self._user is not None else os.geteuid()
        st = socket_dir.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner or stat.S_IMODE(st.st_mode) & 0o077:
            raise StoreUnavailable(
                f"the embedded PostgreSQL's socket directory {socket_dir} is not private (mode "
                f"{stat.S_IMODE(st.st_mode):o}, owner uid {st.st_uid}; expected a 0700 directory of uid {owner}): "
                f"another user could connect as the superuser. Stop that server "
                f"({bin_dir() / 'pg_ctl'} -D {self.pgdata} stop) and start Isotope again")

    # ------------------------------------------------------------------ processes using it

    def _register(self) -> None:
        with _users_lock:
            _users[self.pgdata] = _users.get(self.pgdata, 0) + 1
            first = _users[self.pgdata] == 1
        if first:
            pids = self._read_users()
            self._write_users(sorted(set(pids) | {os.getpid()}))
            _hold(self)

    def _read_users(self) -> list[int]:
        try:
            pids = json.loads((self.data_dir / "postgres.users").read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [p for p in pids if isinstance(p, int) and (p == os.getpid() or _pid_alive(p))]

    def _write_users(self, pids: list[int]) -> None:
        write_private(self.data_dir / "postgres.users", json.dumps(pids))

    def _ensure_database(self) -> None:
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists:
                return
            # Another process may create it first.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def stop(self) -> None:
        """Release this handle; the last process using the server stops it (per ``cleanup``)."""
        socket_dir, self.socket_dir = self.socket_dir, None
        if socket_dir is None:
            return
        with _users_lock:
            _users[self.pgdata] -= 1
            last = _users[self.pgdata] == 0
            if last:
                del _users[self.pgdata]
        if last:
            _release(self, socket_dir)


_held: dict[Path, EmbeddedPostgres] = {}


def _hold(server: EmbeddedPostgres) -> None:
    _held[server.pgdata] = server


def _release(server: EmbeddedPostgres, socket_dir: Path) -> None:
    _held.pop(server.pgdata, None)
    with server._flock():
        others = [p for p in server._read_users() if p != os.getpid()]
        server._write_users(others)
        if others or server.cleanup is None:
            return
        if server._running_socket_dir() is not None:
            server._run("pg_ctl", "-D", str(server.pgdata), "-m", "fast", "-w", "stop")
        if socket_dir != server.pgdata:
            shutil.rmtree(socket_dir, ignore_errors=True)
        if server.cleanup == "delete":
            shutil.rmtree(server.pgdata, ignore_errors=True)


@atexit.register
def _release_at_exit() -> None:
    """A process that exits without closing its store still leaves the server to the others."""
    for server in list(_held.values()):
        with contextlib.suppress(Exception):
            _users.pop(server.pgdata, None)
            _release(server, server.socket_dir or server.pgdata)


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user PostgreSQL runs as when we are root (created if missing), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SYSTEM_USER], check=True, capture_output=True, text=True)
        return pwd.getpwnam(SYSTEM_USER)


def _check_reachable(target: Path, user: pwd.struct_passwd) -> None:
    """Fail with a clear message when ``user`` cannot traverse every directory down to ``target``."""
    groups = {user.pw_gid, *(g.gr_gid for g in _groups_of(user.pw_name))}
    for directory in reversed(target.parents):
        st = directory.stat()
        mode = stat.S_IMODE(st.st_mode)
        allowed = (st.st_uid == user.pw_uid and mode & stat.S_IXUSR) or (
            st.st_gid in groups and mode & stat.S_IXGRP) or mode & stat.S_IXOTH
        if not allowed:
            raise StoreUnavailable(
                f"the embedded PostgreSQL runs as the system user {user.pw_name!r} (PostgreSQL refuses to run "
                f"as root), which cannot enter {directory} (mode {mode:o}) on the way to {target}. Isotope "
                f"never changes the modes of directories above data_dir: put data_dir (and the Python "
                f"environment) where that user can traverse, or run Isotope as a non-root user")


def _groups_of(name: str) -> list[Any]:
    import grp

    return [g for g in grp.getgrall() if name in g.gr_mem]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
