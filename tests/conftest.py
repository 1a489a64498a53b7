"""Shared fixtures: a real PostgreSQL for the whole run, a fresh database per test.

The server is the one named by ``ISOTOPE_TEST_DATABASE_URL`` (a URL whose user may create
databases), else an embedded PostgreSQL 16 started from the ``pgserver`` wheel for this run and
deleted afterwards. Never skipped: without a server the run starts one.

Each test that asks for ``database_url`` gets ``CREATE DATABASE ... TEMPLATE`` of a database
migrated once per run, so tests are isolated and cheap (procrastinate's conftest does the same).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.config import Settings
from app.core.postgres_session_manager import SessionManager, reset_shared_managers
from app.store.embedded import EmbeddedPostgres
from app.store.schema import migrate
from tests import helpers
from tests.helpers import make_settings, pgbouncer_mode


@dataclass
class PgServer:
    """The run's PostgreSQL server."""

    admin_url: str
    kind: str  # "embedded" or "external"
    pgdata: Path | None = None
    bin_dir: Path | None = None

    def url(self, dbname: str) -> str:
        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = dbname
        return make_conninfo(**params)

    def create_database(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template))
            conn.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("ISOTOPE_TEST_DATABASE_URL")
    if external:
        yield PgServer(admin_url=external, kind="external")
        return
    base = Path(tempfile.mkdtemp(prefix="isotope-test-pg-"))
    embedded = EmbeddedPostgres(base, cleanup="delete", database="isotope_admin")
    embedded.start()
    from app.store.embedded import _pgserver

    bin_dir = Path(_pgserver().__file__).parent / "pginstall" / "bin"
    try:
        yield PgServer(admin_url=embedded.admin_url(), kind="embedded", pgdata=embedded.pgdata, bin_dir=bin_dir)
    finally:
        embedded.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def test_pgbouncer(request: pytest.FixtureRequest) -> Iterator[None]:
    """With ``ISOTOPE_TEST_PGBOUNCER=1``: PgBouncer in transaction pooling mode in front of the run's
    server (a TCP one, ``ISOTOPE_TEST_DATABASE_URL``), and Isotope reaches every test database
    through it (tests.helpers.isotope_url); the tests' own checks still connect directly."""
    if not pgbouncer_mode():
        yield
        return
    from tests.ha.pgbouncer import PgBouncer

    pg_server: PgServer = request.getfixturevalue("pg_server")
    params = conninfo_to_dict(pg_server.admin_url)
    host = str(params.get("host") or "")
    if pg_server.kind != "external" or not host or host.startswith("/"):
        raise RuntimeError("ISOTOPE_TEST_PGBOUNCER=1 needs ISOTOPE_TEST_DATABASE_URL naming a TCP host")
    bouncer = PgBouncer(host, int(params.get("port") or 5432), [str(params.get("user") or "postgres")])
    bouncer.start()
    helpers.BOUNCER = bouncer
    try:
        yield
    finally:
        helpers.BOUNCER = None
        bouncer.stop()


@pytest.fixture(scope="session")
def pg_admin_url(pg_server: PgServer) -> str:
    return pg_server.admin_url


@pytest.fixture(scope="session")
def template_database(pg_server: PgServer) -> Iterator[str]:
    name = f"isotope_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = pg_server.create_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    yield name
    pg_server.drop_database(name)


@pytest.fixture
def database_url(pg_server: PgServer, template_database: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"isotope_t_{uuid.uuid4().hex[:12]}"
    url = pg_server.create_database(name, template=template_database)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def empty_database_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database without Isotope's schema (for migration tests)."""
    name = f"isotope_e_{uuid.uuid4().hex[:12]}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    """Settings pointing at this test's database and a private data dir."""
    return make_settings(database_url, data_dir)


@pytest.fixture
def manager(settings: Settings) -> Iterator[SessionManager]:
    """An open PostgreSQL-backed manager on this test's database."""
    with SessionManager(settings, use_postgres=True) as mgr:
        yield mgr


@pytest.fixture(params=["postgres", "files"])
def any_manager(request: pytest.FixtureRequest, settings: Settings) -> Iterator[SessionManager]:
    """The behavioural suite runs once per store: PostgreSQL and the file store."""
    with SessionManager(settings, use_postgres=request.param == "postgres") as mgr:
        yield mgr


@pytest.fixture
def guide_env(monkeypatch: pytest.MonkeyPatch, database_url: str, data_dir: Path) -> Iterator[dict[str, str]]:
    """Environment under which the guide's snippets (get_postgres_session_manager()...) use this
    test's database; the process-wide managers are reset before and after."""
    env = {"ISOTOPE_DATABASE_URL": database_url, "ISOTOPE_DATA_DIR": str(data_dir),
           "ISOTOPE_CONFIG": str(data_dir / "no-config.yaml")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (data_dir / "no-config.yaml").write_text("{}\n")
    reset_shared_managers()
    yield env
    reset_shared_managers()
