"""A Patroni cluster of a test's own: etcd and two PostgreSQL 15 nodes on loopback.

Built from Debian's packages (``etcd-server``, ``patroni``, ``postgresql-15``) and from the
repository's deployment files, ``deploy/etcd/etcd.yml`` and ``deploy/patroni/patroni.yml``: the
test reads them and changes only what one machine needs (:data:`PATRONI_OVERRIDES` names those keys),
so the files we tell people to deploy are the files under test.

PostgreSQL refuses to run as root, and Patroni runs PostgreSQL as its own user: when we are root
every Patroni process runs as the ``postgres`` OS user (created by Debian's ``postgresql-common``)
in a temporary directory handed to that user. Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import yaml
from psycopg.conninfo import make_conninfo

from tests.helpers import REPO, free_port

DEPLOY = REPO / "deploy"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"

# What the test changes in deploy/patroni/patroni.yml, and why: loopback addresses and free ports
# (several nodes on one machine), directories of its own, and timings short enough for CI. A dead
# primary's key expires after ttl; Patroni's rule is loop_wait + 2 * retry_timeout <= ttl.
TEST_TIMINGS = {"ttl": 8, "loop_wait": 1, "retry_timeout": 3}
PATRONI_OVERRIDES = ("scope", "name", "restapi.listen", "restapi.connect_address", "etcd3.hosts",
                     "postgresql.listen", "postgresql.connect_address", "postgresql.data_dir",
                     "postgresql.pgpass", "postgresql.parameters.unix_socket_directories",
                     "bootstrap.dcs.ttl", "bootstrap.dcs.loop_wait", "bootstrap.dcs.retry_timeout",
                     "bootstrap.pg_hba (private-network lines dropped)")


def missing_programs() -> list[str]:
    """The Debian programs this harness needs that are not installed."""
    wanted = {"etcd": "etcd-server", "patroni": "patroni", "patronictl": "patroni"}
    missing = [pkg for prog, pkg in wanted.items() if shutil.which(prog) is None]
    if not (PG_BIN / "postgres").exists():
        missing.append("postgresql-15")
    try:
        subprocess.run(["/usr/bin/python3", "-c", "import etcd"], check=True, capture_output=True, timeout=30)
    except (subprocess.CalledProcessError, FileNotFoundError):
        missing.append("python3-etcd")
    return sorted(set(missing))


def ensure_installed() -> None:
    """Install what is missing with apt-get (CI's .ci/run does it first; this covers a bare pytest)."""
    missing = missing_programs()
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"the HA tests need Debian packages {missing}: apt-get install them (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, timeout=900,
                   capture_output=True)


def _no_private_addresses(value: Any, where: str = "") -> None:
    """The deploy files name a private network; a test must never aim at it (loopback only)."""
    if isinstance(value, dict):
        for key, child in value.items():
            _no_private_addresses(child, f"{where}.{key}")
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _no_private_addresses(child, f"{where}[{i}]")
    elif isinstance(value, str) and "10.0.0." in value:
        raise AssertionError(f"{where} still names the example network: {value!r}")


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read())


class _Owned:
    """A directory the Patroni/PostgreSQL user owns (mode 0755 so we can read logs as root)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="isotope-ha-"))
        self.base.chmod(0o755)
        self.user: str | None = OS_USER if os.geteuid() == 0 else None
        if self.user is not None:
            shutil.chown(self.base, self.user, self.user)

    def popen_kwargs(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "ISOTOPE_", "PYTHON"))}
        if self.user is None:
            return {"env": env}
        record = pwd.getpwnam(self.user)
        env.update(HOME=str(self.base), USER=self.user, LOGNAME=self.user)
        return {"env": env, "user": record.pw_uid, "group": record.pw_gid, "extra_groups": []}

    def mkdir(self, name: str) -> Path:
        path = self.base / name
        path.mkdir(mode=0o700)
        if self.user is not None:
            shutil.chown(path, self.user, self.user)
        return path


@dataclass
class Etcd:
    """One etcd member from deploy/etcd/etcd.yml, on loopback ports of its own."""

    home: _Owned
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = yaml.safe_load((DEPLOY / "etcd" / "etcd.yml").read_text())
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        config.update({"data-dir": str(self.home.base / "etcd"), "listen-client-urls": client,
                       "advertise-client-urls": client, "listen-peer-urls": peer,
                       "initial-advertise-peer-urls": peer, "initial-cluster": f"{config['name']}={peer}",
                       "log-outputs": [str(self.home.base / "etcd.log")]})
        _no_private_addresses(config)
        path = self.home.base / "etcd.yml"
        path.write_text(yaml.safe_dump(config))
        # etcd needs no special user; it runs as we do, its data dir is ours.
        self.proc = subprocess.Popen(["etcd", "--config-file", str(path)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.home.base)
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get_json(f"{client}/health").get("health") == "true":
                    return
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become healthy: {self.log()}")
            time.sleep(0.05)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.home.base / "etcd.log").read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@dataclass
class Node:
    """One Patroni node (Patroni plus the PostgreSQL it manages)."""

    name: str
    home: _Owned
    etcd: Etcd
    scope: str
    pg_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        return self.home.base / self.name

    @property
    def config_path(self) -> Path:
        return self.home.base / f"{self.name}.yml"

    def config(self) -> dict[str, Any]:
        config = copy.deepcopy(yaml.safe_load((DEPLOY / "patroni" / "patroni.yml").read_text()))
        config["scope"], config["name"] = self.scope, self.name
        api, pg = f"127.0.0.1:{self.api_port}", f"127.0.0.1:{self.pg_port}"
        config["restapi"].update(listen=api, connect_address=api)
        config["etcd3"]["hosts"] = [self.etcd.endpoint]
        config["bootstrap"]["dcs"].update(TEST_TIMINGS)
        config["bootstrap"]["pg_hba"] = [line for line in config["bootstrap"]["pg_hba"] if "10.0.0." not in line]
        config["postgresql"].update(listen=pg, connect_address=pg, data_dir=str(self.dir / "data"),
                                    pgpass=str(self.dir / "pgpass"), bin_dir=str(PG_BIN))
        config["postgresql"]["parameters"]["unix_socket_directories"] = str(self.dir)
        config["log"] = {"dir": str(self.dir), "level": "INFO", "file_num": 1}
        _no_private_addresses(config)
        return config

    def start(self) -> None:
        if not self.dir.exists():
            self.home.mkdir(self.name)
        self.config_path.write_text(yaml.safe_dump(self.config()))
        with open(self.dir / "stderr.log", "ab") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(["patroni", str(self.config_path)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=stderr, cwd=self.dir,
                                         **self.home.popen_kwargs())

    def status(self) -> dict[str, Any] | None:
        """Patroni's REST view of this node, or None when it does not answer."""
        try:
            try:
                return dict(_get_json(f"http://127.0.0.1:{self.api_port}/patroni"))
            except urllib.error.HTTPError as exc:  # 503 still carries the JSON body
                return dict(json.loads(exc.read()))
        except (OSError, ValueError):
            return None

    def postmaster(self) -> psutil.Process | None:
        try:
            pid = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid)
        except (OSError, ValueError, IndexError, psutil.Error):
            return None

    def kill9(self) -> int:
        """kill -9 this node's Patroni, its postmaster and every PostgreSQL process: a dead machine."""
        victims: list[psutil.Process] = []
        if self.proc is not None and self.proc.poll() is None:
            victims.append(psutil.Process(self.proc.pid))
        postmaster = self.postmaster()
        if postmaster is not None:
            victims += [postmaster, *postmaster.children(recursive=True)]
        for process in victims:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        psutil.wait_procs(victims, timeout=30)
        return len(victims)

    def stop(self) -> None:
        """Stop Patroni and its PostgreSQL (forcibly: the cluster is thrown away afterwards)."""
        self.kill9()

    def log(self) -> str:
        parts = []
        for path in sorted(self.dir.glob("*.log")) + sorted((self.dir / "data" / "log").glob("*")):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-2500:]}")
        return "\n".join(parts)


class PatroniCluster:
    """etcd plus ``size`` Patroni nodes; :meth:`start` returns once a leader and a synchronous
    standby are streaming."""

    SUPERUSER = "postgres"

    def __init__(self, size: int = 2) -> None:
        ensure_installed()
        self.home = _Owned()
        self.scope = f"isotope-test-{os.getpid()}-{free_port()}"
        self.etcd = Etcd(self.home)
        self.nodes = [Node(f"pg{n + 1}", self.home, self.etcd, self.scope) for n in range(size)]
        deploy = yaml.safe_load((DEPLOY / "patroni" / "patroni.yml").read_text())
        self.superuser_password = str(deploy["postgresql"]["authentication"]["superuser"]["password"])

    # ------------------------------------------------------------------ life cycle

    def start(self, timeout: float = 120) -> float:
        started = time.monotonic()
        self.etcd.start()
        self.nodes[0].start()
        self.wait_for(lambda: self.leader() is self.nodes[0], timeout, "the first node leads")
        for node in self.nodes[1:]:
            node.start()
        self.wait_synchronous(timeout)
        return time.monotonic() - started

    def destroy(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        self.etcd.stop()
        shutil.rmtree(self.home.base, ignore_errors=True)

    def __enter__(self) -> PatroniCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ------------------------------------------------------------------ state

    def members(self) -> list[dict[str, Any]]:
        """Patroni's /cluster view, asked of any live node."""
        for node in self.nodes:
            try:
                return list(_get_json(f"http://127.0.0.1:{node.api_port}/cluster")["members"])
            except (OSError, ValueError, KeyError):
                continue
        return []

    def leader(self) -> Node | None:
        """The node whose PostgreSQL is a running primary and holds the leader key."""
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return self.node(member["name"])
        return None

    def sync_standby(self) -> Node | None:
        for member in self.members():
            if member.get("role") == "sync_standby" and member.get("state") in ("running", "streaming"):
                return self.node(member["name"])
        return None

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def wait_synchronous(self, timeout: float = 90) -> tuple[Node, Node]:
        """Until a leader and a synchronous standby are in place, and the leader's PostgreSQL
        really waits for the standby (synchronous_standby_names set): a commit is then on two nodes."""
        def ready() -> bool:
            leader, standby = self.leader(), self.sync_standby()
            if leader is None or standby is None:
                return False
            try:
                with psycopg.connect(self.node_url(leader), connect_timeout=2) as conn:
                    row = conn.execute("SELECT current_setting('synchronous_standby_names'),"
                                       " (SELECT count(*) FROM pg_stat_replication"
                                       "  WHERE sync_state = 'sync' AND state = 'streaming')").fetchone()
            except psycopg.Error:
                return False
            return row is not None and row[0] != "" and row[1] >= 1

        self.wait_for(ready, timeout, "a leader with a streaming synchronous standby")
        leader, standby = self.leader(), self.sync_standby()
        assert leader is not None and standby is not None
        return leader, standby

    def wait_for(self, condition: Any, timeout: float, what: str) -> float:
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{what}: not within {timeout} s; members {self.members()}\n{self.logs()}")
            time.sleep(0.1)
        return time.monotonic() - started

    def logs(self) -> str:
        return "\n".join(f"===== {n.name}\n{n.log()}" for n in self.nodes) + f"\n===== etcd\n{self.etcd.log()}"

    # ------------------------------------------------------------------ connections

    def node_url(self, node: Node, dbname: str = "postgres", user: str | None = None,
                 password: str | None = None) -> str:
        return make_conninfo(host="127.0.0.1", port=node.pg_port, dbname=dbname, user=user or self.SUPERUSER,
                             password=password or self.superuser_password)

    def url(self, dbname: str, user: str, password: str, **params: Any) -> str:
        """A libpq multi-host URL naming every node, which connects to whichever is the primary."""
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        query = "&".join(f"{k}={v}" for k, v in {"target_session_attrs": "read-write", **params}.items())
        return f"postgresql://{user}:{password}@{hosts}/{dbname}?{query}"

    def admin(self) -> psycopg.Connection[Any]:
        leader = self.leader()
        assert leader is not None, "no leader"
        return psycopg.connect(self.node_url(leader), autocommit=True, connect_timeout=5)

    # ------------------------------------------------------------------ operations

    def switchover(self, candidate: Node) -> None:
        """A planned switchover with patronictl, as an operator would run it."""
        leader = self.leader()
        assert leader is not None
        subprocess.run(["patronictl", "-c", str(leader.config_path), "switchover", self.scope,
                        "--leader", leader.name, "--candidate", candidate.name, "--force"],
                       check=True, capture_output=True, timeout=120, cwd=self.home.base,
                       **self.home.popen_kwargs())


@contextlib.contextmanager
def patroni_cluster(size: int = 2) -> Iterator[PatroniCluster]:
    cluster = PatroniCluster(size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
