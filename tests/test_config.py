"""Configuration: the file, the environment, and one clear line for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import load_settings, redact_conninfo
from app.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_guides_block_selects_that_server(tmp_path: Path) -> None:
    path = write(tmp_path, "postgresql:\n  host: localhost\n  port: 5432\n  user: sweet\n"
                           "  password: your_password\n  database: isotope\npostgres_sessions: true\n")
    settings = load_settings(path, environ={})
    assert settings.embedded is False
    assert "host=localhost" in settings.conninfo() and "password=your_password" in settings.conninfo()
    assert settings.sources["postgresql.port"] == f"file {path}"


@pytest.mark.parametrize("block", [
    "  host: [pg1.example, pg2.example]\n  port: [5432, 5433]\n",
    "  host: pg1.example,pg2.example\n  port: 5432,5433\n",
])
def test_several_servers_become_a_libpq_multi_host_conninfo(tmp_path: Path, block: str) -> None:
    path = write(tmp_path, f"postgresql:\n{block}  user: isotope\n  password: s3cret\n  database: isotope\n"
                           "  target_session_attrs: read-write\n")
    conninfo = load_settings(path, environ={}).conninfo()
    assert conninfo == ("host=pg1.example,pg2.example port=5432,5433 user=isotope dbname=isotope "
                        "target_session_attrs=read-write password=s3cret")


def test_a_bad_block_never_echoes_the_password(tmp_path: Path) -> None:
    path = write(tmp_path, "postgresql:\n  host: [a, b]\n  port: [1, 2, 3]\n  password: hunter2-secret\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "hunter2" not in str(caught.value)


def test_no_file_and_the_shipped_file_mean_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/config.yaml here: all defaults
    defaults = load_settings(environ={})
    assert defaults.embedded and defaults.config_path is None and defaults.sources == {}
    shipped = load_settings(Path(__file__).resolve().parent.parent / "config" / "config.yaml", environ={})
    assert shipped.embedded and shipped.conninfo() is None and shipped.postgres_sessions


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "postgresql:\n  host: filehost\ndata_dir: /from/file\n")
    env = {"ISOTOPE_DATABASE_URL": "postgresql://u:pw@envhost/db", "ISOTOPE_DATA_DIR": "/from/env",
           "ISOTOPE_POSTGRES_SESSIONS": "false"}
    settings = load_settings(path, environ=env)
    assert settings.conninfo() == "postgresql://u:pw@envhost/db"
    assert settings.data_dir == Path("/from/env") and settings.postgres_sessions is False
    assert settings.sources["data_dir"] == "env ISOTOPE_DATA_DIR"
    assert not any(key.startswith("postgresql.") for key in settings.sources)


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql:\n  port: not-a-port\n", "postgresql.port: Input should be a valid integer"),
    ("postgresql:\n  prot: 5432\n", "postgresql.prot: unknown key"),
    ("postgres_sessions: maybe\n", "postgres_sessions: Input should be a valid boolean"),
    ("store:\n  pool_max_size: 0\n", "store.pool_max_size: Input should be greater than or equal to 1"),
    ("postgresql: [1, 2]\n", "postgresql: Input should be a valid dictionary"),
    ("- just\n- a list\n", "the top level must be a mapping"),
    ("postgresql:\n  port: 5432\n   bad: indent\n", "not valid YAML"),
    ("postgresql:\n  embedded: true\n  host: h\n", "embedded: true and host are exclusive"),
    ("postgresql:\n  host: [a, b]\n  port: [1, 2, 3]\n", "postgresql: 3 ports for 2 hosts"),
    ("postgresql:\n  host: a\n  port: 70000\n", "postgresql.port: each port must be from 1 to 65535"),
    ("postgresql:\n  host: a\n  target_session_attrs: rw\n", "postgresql.target_session_attrs: Input should be"),
    ("postgresql:\n  host: ''\n", "postgresql.host: empty"),
])
def test_bad_values_are_one_line_naming_key_and_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "postgresql:\n  host: h\n  password: [not, a, string]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "not" not in str(caught.value).split("password:")[1]
    redacted = redact_conninfo("postgresql://u:hunter2@h/db")
    assert "hunter2" not in redacted and "password=***" in redacted and "host=h" in redacted


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(environ={"ISOTOPE_CONFIG": str(tmp_path / "missing.yaml")})


def test_bad_database_url(tmp_path: Path) -> None:
    path = write(tmp_path, "{}\n")
    with pytest.raises(ConfigError, match="env ISOTOPE_DATABASE_URL: database_url: not a valid libpq URL"):
        load_settings(path, environ={"ISOTOPE_DATABASE_URL": "postgresql://h:notaport:x/db?=="})
