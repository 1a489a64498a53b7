"""The console's tests share the API tests' fixtures: one database and one ``isotope serve`` per module."""

from tests.api.conftest import client, module_data_dir, module_database_url, server

__all__ = ["client", "module_data_dir", "module_database_url", "server"]
