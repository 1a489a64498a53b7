"""Helpers for tests (importable as ``tests.helpers``)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from app.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago: for servers to start, or as an
    address where no PostgreSQL answers (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(database_url: str | None, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for this test's database and data dir, ignoring the repository's config file."""
    config = data_dir / "no-config.yaml"
    if not config.exists():
        config.write_text("{}\n")
    environ = {"ISOTOPE_DATA_DIR": str(data_dir)}
    if database_url is not None:
        environ["ISOTOPE_DATABASE_URL"] = database_url
    return load_settings(path=config, environ=environ, overrides=overrides)


def subprocess_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for an Isotope child process on this test's database."""
    env = dict(os.environ)
    env.update({"ISOTOPE_DATABASE_URL": database_url, "ISOTOPE_DATA_DIR": str(data_dir),
                "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env
