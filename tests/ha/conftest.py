"""Fixtures of the HA tests: a Patroni cluster (etcd + two PostgreSQL 15 nodes) per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg import sql

from tests.ha.patroni import DEPLOY, PatroniCluster


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
