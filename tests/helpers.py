"""Helpers for tests (importable as ``tests.helpers``)."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from app.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago: for servers to start, or as an
    address where no PostgreSQL answers (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pgbouncer_mode() -> bool:
    """``ISOTOPE_TEST_PGBOUNCER=1``: the run's databases are reached through PgBouncer in transaction
    pooling mode (tests/conftest.py), so Isotope must not use server-side prepared statements."""
    return os.environ.get("ISOTOPE_TEST_PGBOUNCER") == "1"


BOUNCER: Any = None  # the run's PgBouncer in PgBouncer mode (set by tests/conftest.py)


def isotope_url(database_url: str) -> str:
    """The URL Isotope is given for a test database: through the run's PgBouncer in PgBouncer mode."""
    if BOUNCER is None or not database_url:
        return database_url
    params = conninfo_to_dict(database_url)
    if (params.get("host"), str(params.get("port") or 5432)) != (BOUNCER.server_host, str(BOUNCER.server_port)):
        return database_url  # another server (a fault test's own cluster): not behind the run's PgBouncer
    return str(BOUNCER.url(str(params["dbname"]), str(params.get("user") or "postgres")))


def pooled_config() -> dict[str, Any]:
    """What an Isotope configuration needs in PgBouncer mode (empty otherwise)."""
    return {"store": {"prepare_threshold": None}} if pgbouncer_mode() else {}


def make_settings(database_url: str | None, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for this test's database and data dir, ignoring the repository's config file."""
    config = data_dir / "no-config.yaml"
    if not config.exists():
        config.write_text(json.dumps(pooled_config()) + "\n")
    environ = {"ISOTOPE_DATA_DIR": str(data_dir)}
    if database_url is not None:
        environ["ISOTOPE_DATABASE_URL"] = isotope_url(database_url)
    return load_settings(path=config, environ=environ, overrides=overrides)


def subprocess_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for an Isotope child process on this test's database."""
    env = dict(os.environ)
    env.update({"ISOTOPE_DATABASE_URL": isotope_url(database_url), "ISOTOPE_DATA_DIR": str(data_dir),
                "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env
