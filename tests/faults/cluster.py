"""A PostgreSQL cluster of a test module's own, on a TCP port, that a test may stop and start.

The run's server (``pg_server``) is shared by every test, so no test may stop it. A fault test
module gets this instead: ``initdb`` into a temporary directory with pgserver's PostgreSQL 16
binaries, ``pg_ctl start`` listening on 127.0.0.1 only (no Unix socket, so clients really go
through TCP and see what a remote server's failure looks like), and :meth:`Cluster.stop` with
``-m immediate``: every server process is killed at once, no checkpoint, crash recovery at the
next start — as close to a crashed or unplugged database as one machine allows.

PostgreSQL refuses to run as root. When we are root the cluster directory is handed to the
unprivileged ``pgserver`` user that pgserver itself creates, and ``initdb``/``pg_ctl`` run as
that user (what pgserver's ``ensure_pgdata_inited`` does for its own clusters).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from app.store.embedded import _pgserver
from app.store.schema import migrate
from tests.helpers import free_port

SYSTEM_USER = "pgserver"


def binaries() -> Path:
    return Path(_pgserver().__file__).parent / "pginstall" / "bin"



def _chown_tree(root: Path, user: str) -> None:
    shutil.chown(root, user, user)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            shutil.chown(os.path.join(parent, name), user, user)


class Cluster:
    """One throwaway cluster: :meth:`start`, :meth:`stop`, :meth:`url`, :meth:`destroy`."""

    def __init__(self, bin_dir: Path | None = None, pristine: Path | None = None) -> None:
        """A new cluster: a copy of ``pristine`` (an initdb'ed data directory) if given, else initdb."""
        self.bin_dir = bin_dir or binaries()
        self.base = Path(tempfile.mkdtemp(prefix="isotope-fault-pg-"))
        self.pgdata = self.base / "pgdata"
        self.log = self.base / "server.log"
        self.port = free_port()
        self.user: str | None = None
        self.template: str | None = None
        if os.geteuid() == 0:
            utils = __import__("pgserver.utils", fromlist=["ensure_user_exists"])
            utils.ensure_user_exists(SYSTEM_USER)
            utils.ensure_prefix_permissions(self.base)
            utils.ensure_prefix_permissions(self.bin_dir)
            readable = stat.S_IRGRP | stat.S_IROTH
            utils.ensure_folder_permissions(self.bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
            utils.ensure_folder_permissions(self.bin_dir.parent / "lib", readable)
            self.user = SYSTEM_USER
        self.base.chmod(0o755)
        if pristine is not None:
            shutil.copytree(pristine, self.pgdata, symlinks=True)
        if self.user is not None:
            _chown_tree(self.base, self.user)
        if pristine is None:
            self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres",
                      "--no-sync", timeout=120)

    # ------------------------------------------------------------------ server control

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        # Output goes to files, never pipes: the server inherits pg_ctl's descriptors and would
        # keep a pipe open after pg_ctl exits (pgserver's _commands notes the same hang).
        with open(self.base / f"{program}.out", "ab") as out:
            kwargs: dict[str, Any] = {"user": self.user} if self.user is not None else {}
            subprocess.run([str(self.bin_dir / program), *args], stdin=subprocess.DEVNULL, stdout=out,
                           stderr=out, check=True, timeout=timeout, cwd=self.base, **kwargs)

    def start(self) -> float:
        """Start the server and wait until it accepts connections; return the seconds it took."""
        started = time.perf_counter()
        options = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories='' -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                  "start", timeout=90)
        return time.perf_counter() - started

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server: ``immediate`` kills every server process at once (no checkpoint)."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop", timeout=90)

    def signal_all(self, signum: int) -> int:
        """Send ``signum`` to the postmaster and every server process; how many got it."""
        postmaster = psutil.Process(int((self.pgdata / "postmaster.pid").read_text().split()[0]))
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            process.send_signal(signum)
        return len(processes)

    @property
    def running(self) -> bool:
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def ensure_running(self) -> None:
        if not (self.pgdata / "postmaster.pid").exists():
            self.start()

    def destroy(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):  # already down
                self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------ databases

    def url(self, dbname: str, **params: Any) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, **params)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def fresh_database(self) -> str:
        """A new database with Isotope's schema (cloned from a migrated template); its URL."""
        with self.admin() as conn:
            if self.template is None:
                self.template = "isotope_fault_template"
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
                with psycopg.connect(self.url(self.template), autocommit=True) as tpl:
                    migrate(tpl)
            name = f"isotope_f_{uuid.uuid4().hex[:10]}"
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(self.template)))
        return self.url(name)
