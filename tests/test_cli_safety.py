"""Issue 13 item 5: no secret in any output, and stored text reaches the terminal inert.

Run as a user runs them: real ``isotope`` processes on a real PostgreSQL.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from app.config import Settings
from app.core.postgres_session_manager import SessionManager
from tests.helpers import PYTHON, REPO, subprocess_env

SSL_PASSWORD = "sslpw-Zq81-never-shown"
PASSWORD = "pw-Hh27-never-shown"
URL_PASSWORD = "urlpw-Kk90-never-shown"
OPENAI_KEY = "sk-test-Mm33-never-shown"
SECRETS = (SSL_PASSWORD, PASSWORD, URL_PASSWORD, OPENAI_KEY)
# ESC, CSI (8-bit), BEL, a bidi override: none may reach the terminal raw.
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def isotope(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "app.cli.main", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=180)


def secret_config(database_url: str, data_dir: Path) -> Path:
    """The configured server as a ``postgresql:`` block with a password, secret-like options and a
    model endpoint whose URL carries credentials (the test server trusts local connections)."""
    params = conninfo_to_dict(database_url)
    config = {
        "postgresql": {"host": params.get("host", "127.0.0.1"), "port": int(params.get("port", 5432)),
                       "user": params.get("user"), "database": params["dbname"], "password": PASSWORD,
                       "options": {"sslmode": "prefer", "sslpassword": SSL_PASSWORD, "application_name": "doc"}},
        "engine": {"openai": {"base_url": f"https://proxy-user:{URL_PASSWORD}@llm.example/v1",
                              "api_key_env": "ISOTOPE_TEST_OPENAI_KEY"}},
    }
    path = data_dir / "secret.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("args", [["doctor"], ["doctor", "--json"], ["-v", "doctor", "--no-roundtrip"]],
                         ids=" ".join)
def test_doctor_masks_every_secret_like_option_and_url_credential(database_url: str, data_dir: Path,
                                                                   args: list[str]) -> None:
    env = subprocess_env(database_url, data_dir, ISOTOPE_CONFIG=str(secret_config(database_url, data_dir)),
                         ISOTOPE_TEST_OPENAI_KEY=OPENAI_KEY, COLUMNS="400")
    env.pop("ISOTOPE_DATABASE_URL")
    out = isotope(args, env)
    assert out.returncode == 0, out.stdout + out.stderr
    for secret in SECRETS:
        assert secret not in out.stdout + out.stderr, secret
    text = out.stdout if "--json" not in args else json.dumps(json.loads(out.stdout))
    assert "postgresql.options.sslpassword" in text and "postgresql.options.application_name" in text
    assert "https://proxy-user:***@llm.example/v1" in text


def test_doctor_masks_secret_options_of_a_database_url(database_url: str, data_dir: Path) -> None:
    params = conninfo_to_dict(database_url)
    host, port = params.get("host", "127.0.0.1"), params.get("port", 5432)
    # A Unix-socket directory (the embedded test server) goes in the query, as libpq allows.
    where = f"/{params['dbname']}?host={host}&port={port}&" if host.startswith("/") \
        else f"{host}:{port}/{params['dbname']}?"
    user = params.get("user", "postgres")
    url = f"postgresql://{user}:{URL_PASSWORD}@{where}sslpassword={SSL_PASSWORD}&sslmode=prefer"
    (data_dir / "empty.yaml").write_text("{}\n")
    env = subprocess_env(url, data_dir, ISOTOPE_CONFIG=str(data_dir / "empty.yaml"))
    out = isotope(["doctor", "--json"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert URL_PASSWORD not in out.stdout + out.stderr and SSL_PASSWORD not in out.stdout + out.stderr
    rows = {row["key"]: row["value"] for row in json.loads(out.stdout)["config"]}
    assert "sslpassword=***" in rows["database_url"] and "password=***" in rows["database_url"]


HOSTILE_ID = "evil\x1b]0;pwned\x07\x1b[2J[bold red]id[/]\u202egnp.exe"
HOSTILE_NAME = "name\x1b[31m\x9b1;1H[link=file:///etc/passwd]click[/link]"


@pytest.fixture
def hostile_env(settings: Settings, database_url: str, data_dir: Path) -> dict[str, str]:
    with SessionManager(settings, use_postgres=True) as manager:
        manager.save_session(HOSTILE_ID, {"messages": [], "tasks": [{"id": 1, "title": "t\x1b[8m"}]},
                             metadata={"name": HOSTILE_NAME, "note": "\x1bP+q\x1b\\"})
    config = data_dir / "config.yaml"
    config.write_text("postgres_sessions: true\n")
    return subprocess_env(database_url, data_dir, ISOTOPE_CONFIG=str(config), COLUMNS="400")


def assert_inert(output: str) -> None:
    assert not RAW_CONTROLS.search(output), repr(output)
    assert "\\x1b" in output or "\\u001b" in output  # shown, visibly, instead


@pytest.mark.parametrize("args", [["sessions", "list"], ["sessions", "list", "--json"],
                                  ["sessions", "show", HOSTILE_ID], ["sessions", "show", HOSTILE_ID, "--json"]],
                         ids=lambda a: " ".join(x for x in a if x != HOSTILE_ID))
def test_sessions_commands_print_stored_text_inert(hostile_env: dict[str, str], args: list[str]) -> None:
    out = isotope(args, hostile_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert_inert(out.stdout)
    if "--json" in args:
        data = json.loads(out.stdout)  # still valid JSON, and the values are unchanged
        ids = [row["session_id"] for row in data] if isinstance(data, list) else [data["session_id"]]
        assert HOSTILE_ID in ids
    else:
        assert "[bold red]id[/]" in out.stdout  # markup printed as text, not applied


def test_chat_prints_a_hostile_session_id_inert(hostile_env: dict[str, str]) -> None:
    out = isotope(["chat", "--session", HOSTILE_ID, "-m", "add task: \x1b[5mblink"], hostile_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert_inert(out.stdout)
    assert "[bold red]id[/]" in out.stdout


def test_an_error_naming_a_hostile_id_is_inert(hostile_env: dict[str, str]) -> None:
    missing = "gone\x1b[2J[red]x[/]"
    for args in (["sessions", "show", missing], ["chat", "--session", missing, "-m", "hi"]):
        out = isotope(args, hostile_env)
        assert out.returncode == 1
        assert_inert(out.stdout + out.stderr)
        assert "[red]x[/]" in out.stdout + out.stderr
