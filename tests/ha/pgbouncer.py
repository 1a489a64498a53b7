"""PgBouncer (Debian's ``pgbouncer``) in transaction pooling mode in front of a test server.

Started from the repository's ``deploy/pgbouncer/pgbouncer.ini``; the test changes only what one
machine needs (:data:`OVERRIDES`). ``default_pool_size`` is cut to 2 so that the few client
connections of a test really share PostgreSQL backends: with as many backends as clients, a
client would keep its backend by chance and hide every reliance on session state.

PgBouncer refuses to run as root: as root it runs as the ``postgres`` OS user (``-u``).
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from tests.helpers import REPO, free_port

DEPLOY_INI = REPO / "deploy" / "pgbouncer" / "pgbouncer.ini"
OS_USER = "postgres"
POOL_SIZE = 2
OVERRIDES = ("[databases] * (the test server)", "listen_addr", "listen_port", "auth_type (trust: the test "
             "server trusts loopback)", "auth_file", "logfile", "pidfile", f"default_pool_size ({POOL_SIZE})")


def version() -> tuple[int, int]:
    """The installed PgBouncer's (major, minor)."""
    out = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    assert match, out
    return int(match.group(1)), int(match.group(2))


def keeps_prepared_statements() -> bool:
    """PgBouncer 1.21 added max_prepared_statements (prepared statements across transactions)."""
    return version() >= (1, 21)


class PgBouncer:
    """One PgBouncer in front of ``server_host:server_port``; :meth:`url` names a database through it."""

    def __init__(self, server_host: str, server_port: int, users: list[str], pool_mode: str = "transaction") -> None:
        if shutil.which("pgbouncer") is None:
            from tests.ha.patroni import ensure_installed

            ensure_installed()
        self.server_host, self.server_port = server_host, server_port
        self.base = Path(tempfile.mkdtemp(prefix="isotope-pgbouncer-"))
        self.base.chmod(0o755)
        self.port = free_port()
        self.user = OS_USER if os.geteuid() == 0 else None
        ini = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"), inline_comment_prefixes=None)
        ini.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        ini.read(DEPLOY_INI)
        ini["databases"] = {"*": f"host={server_host} port={server_port}"}
        (self.base / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in users))
        ini["pgbouncer"].update({
            "listen_addr": "127.0.0.1", "listen_port": str(self.port), "auth_type": "trust",
            "auth_file": str(self.base / "userlist.txt"), "logfile": str(self.base / "pgbouncer.log"),
            "pidfile": str(self.base / "pgbouncer.pid"), "default_pool_size": str(POOL_SIZE),
            "pool_mode": pool_mode, "admin_users": ",".join(users),
        })
        assert ini["pgbouncer"]["pool_mode"] == "transaction" or pool_mode != "transaction"
        with open(self.base / "pgbouncer.ini", "w") as out:
            ini.write(out)
        if self.user is not None:
            for path in [self.base, *self.base.iterdir()]:
                shutil.chown(path, self.user, self.user)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        command = ["pgbouncer", str(self.base / "pgbouncer.ini")]
        if self.user is not None:
            command[1:1] = ["-u", self.user]
        with open(self.base / "stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=stderr, cwd=self.base)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{self.log()}")
            time.sleep(0.02)

    def url(self, dbname: str, user: str, **params: Any) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, dbname=dbname, user=user, **params)

    def show(self, what: str, user: str) -> list[dict[str, Any]]:
        """A ``SHOW`` of PgBouncer's admin console (``pools``, ``servers``, ``stats``...)."""
        with psycopg.connect(self.url("pgbouncer", user), autocommit=True, prepare_threshold=None) as conn:
            cur = conn.execute(f"SHOW {what}")
            names = [c.name for c in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def log(self) -> str:
        parts = []
        for name in ("pgbouncer.log", "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append((self.base / name).read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)


class Traffic:
    """Other clients' traffic through PgBouncer: a thread that keeps taking a backend for a few
    milliseconds at a time. With 2 backends and one Isotope client alone, PgBouncer would hand that
    client the same backend every time and hide any state left on it; with this running, one
    client's consecutive statements land on different backends, as under real load."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statements = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, prepare_threshold=None) as conn:
            while not self._stop.is_set():
                conn.execute("SELECT pg_sleep(0.003)")
                self.statements += 1
                self._stop.wait(0.001)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
