"""Fixtures of the fault tests: a PostgreSQL cluster per test module that tests may stop and start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.cluster import Cluster


@pytest.fixture(scope="session")
def pristine_cluster(pg_server) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """An initdb'ed data directory, made once per run; each module's cluster starts as a copy."""
    first = Cluster(pg_server.bin_dir)
    try:
        yield first.pgdata
    finally:
        first.destroy()


@pytest.fixture(scope="module")
def cluster(pg_server, pristine_cluster: Path) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    """This module's own server (pgserver's binaries, a TCP port on 127.0.0.1), destroyed after it."""
    server = Cluster(pg_server.bin_dir, pristine=pristine_cluster)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def fault_db(cluster: Cluster) -> str:
    """A fresh migrated database on the module's cluster (started again if a test left it down)."""
    cluster.ensure_running()
    return cluster.fresh_database()
