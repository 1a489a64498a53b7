"""Fixtures of the HA tests: a Patroni cluster (etcd + two PostgreSQL 15 nodes) per module, and
PgBouncer in transaction pooling mode in front of a server of the module's own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.faults.cluster import Cluster
from tests.ha.patroni import DEPLOY, PatroniCluster
from tests.ha.pgbouncer import PgBouncer


def deploy_config(name: str) -> dict[str, Any]:
    """One of deploy/isotope/*.yaml, as a dict."""
    return dict(yaml.safe_load((DEPLOY / "isotope" / name).read_text()))


@pytest.fixture(scope="module")
def patroni() -> Iterator[PatroniCluster]:
    """A running cluster with a leader and a streaming synchronous standby, and the database and
    role that deploy/isotope/config-patroni.yaml names (created as the README's guide says)."""
    cluster = PatroniCluster(size=2)
    try:
        cluster.start()
        isotope = deploy_config("config-patroni.yaml")["postgresql"]
        with cluster.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(isotope["user"]), sql.Literal(isotope["password"])))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(isotope["database"]), sql.Identifier(isotope["user"])))
        yield cluster
    finally:
        cluster.destroy()


def isotope_on(cluster: PatroniCluster, data_dir: Path) -> dict[str, Any]:
    """deploy/isotope/config-patroni.yaml aimed at this cluster's nodes (host, port, data_dir)."""
    config = deploy_config("config-patroni.yaml")
    config["postgresql"]["host"] = ["127.0.0.1"] * len(cluster.nodes)
    config["postgresql"]["port"] = [node.pg_port for node in cluster.nodes]
    config["data_dir"] = str(data_dir)
    return config


@dataclass
class Bounced:
    """A fresh migrated database on the module's server, reached directly and through PgBouncer."""

    direct_url: str
    url: str  # through PgBouncer
    dbname: str
    bouncer: PgBouncer


@pytest.fixture(scope="module")
def bouncer_server(pg_server) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    """This module's own PostgreSQL on a loopback TCP port (PgBouncer reaches it there)."""
    server = Cluster(pg_server.bin_dir)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def pgbouncer(bouncer_server: Cluster) -> Iterator[PgBouncer]:
    """PgBouncer from deploy/pgbouncer/pgbouncer.ini, transaction pooling, in front of that server."""
    bouncer = PgBouncer("127.0.0.1", bouncer_server.port, ["postgres"])
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def bounced(bouncer_server: Cluster, pgbouncer: PgBouncer) -> Bounced:
    bouncer_server.ensure_running()
    direct = bouncer_server.fresh_database()
    dbname = str(conninfo_to_dict(direct)["dbname"])
    return Bounced(direct_url=direct, url=pgbouncer.url(dbname, "postgres"), dbname=dbname, bouncer=pgbouncer)


def isotope_through(bounced: Bounced, data_dir: Path) -> dict[str, Any]:
    """deploy/isotope/config-pgbouncer.yaml aimed at the test's PgBouncer and database."""
    config = deploy_config("config-pgbouncer.yaml")
    config["postgresql"].update(host="127.0.0.1", port=bounced.bouncer.port, user="postgres",
                                database=bounced.dbname)
    config["postgresql"].pop("password", None)  # the test server trusts loopback
    config["data_dir"] = str(data_dir)
    return config
