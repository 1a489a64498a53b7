"""Fixtures for the API tests: one database and one ``isotope serve`` per test module.

Starting a server costs about two seconds (imports), so a module shares one; its tests create their
own sessions and never assume they are alone in the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.api.server import ApiServer

if TYPE_CHECKING:
    from tests.conftest import PgServer


@pytest.fixture(scope="module")
def module_database_url(pg_server: PgServer, template_database: str) -> Iterator[str]:
    name = f"isotope_api_{uuid.uuid4().hex[:12]}"
    url = pg_server.create_database(name, template=template_database)
    yield url
    pg_server.drop_database(name)


@pytest.fixture(scope="module")
def module_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-data")


@pytest.fixture(scope="module")
def server(module_database_url: str, module_data_dir: Path) -> Iterator[ApiServer]:
    """A server with the default configuration (no token)."""
    srv = ApiServer(module_database_url, module_data_dir, config={"api": {"cleanup_interval_s": 3600}})
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
