"""The isotope command, run as a user runs it (a real process)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.store.schema import MIGRATIONS
from tests.helpers import PYTHON, REPO, subprocess_env


def isotope(args: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "app.cli.main", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=180)


@pytest.fixture
def env(database_url: str, data_dir: Path) -> dict[str, str]:
    config = data_dir / "config.yaml"
    config.write_text("postgres_sessions: true\n")
    return subprocess_env(database_url, data_dir, ISOTOPE_CONFIG=str(config))


def test_doctor_is_healthy_on_a_working_database(env: dict[str, str]) -> None:
    out = isotope(["doctor"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "healthy" in out.stdout and "Round trip" in out.stdout and "env ISOTOPE_DATABASE_URL" in out.stdout


def test_doctor_json_and_password_is_masked(env: dict[str, str], database_url: str) -> None:
    env["ISOTOPE_DATABASE_URL"] = database_url.replace("dbname=", "password=s3cr3t-value dbname=") \
        if "dbname=" in database_url else database_url
    out = isotope(["doctor", "--json"], env)
    assert "s3cr3t-value" not in out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["connection"]["schema_version"] == report["connection"]["schema_latest"]


def test_doctor_with_a_bad_value_is_one_line_and_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("postgresql:\n  port: not-a-port\n")
    env["ISOTOPE_CONFIG"] = str(bad)
    env.pop("ISOTOPE_DATABASE_URL")
    out = isotope(["doctor"], env)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr + out.stdout
    assert "postgresql.port" in out.stderr and str(bad) in out.stderr.replace("\n", "")


def test_doctor_unhealthy_when_the_server_is_down(env: dict[str, str]) -> None:
    env["ISOTOPE_DATABASE_URL"] = "postgresql://isotope:pw-never-shown@127.0.0.1:9/isotope"
    out = isotope(["doctor"], env)
    assert out.returncode == 1
    assert "NOT healthy" in out.stdout and "pw-never-shown" not in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_sessions_commands(env: dict[str, str], database_url: str, data_dir: Path) -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    from app.core.postgres_session_manager import SessionManager
    from tests.helpers import make_settings

    with SessionManager(make_settings(database_url, data_dir), use_postgres=True) as manager:
        manager.save_session("cli-1", {"messages": [HumanMessage("hi"), AIMessage("hello")], "tasks": []},
                             metadata={"name": "first"})
        manager.save_session("cli-2", {"messages": []}, expires_in_hours=0)
    listed = json.loads(isotope(["sessions", "list", "--json"], env).stdout)
    assert [s["session_id"] for s in listed] == ["cli-1"]
    assert len(json.loads(isotope(["sessions", "list", "--all", "--json"], env).stdout)) == 2
    shown = json.loads(isotope(["sessions", "show", "cli-1", "--json"], env).stdout)
    assert shown["messages"] == [{"type": "human", "content": "hi"}, {"type": "ai", "content": "hello"}]
    assert "[human] hi" in isotope(["sessions", "show", "cli-1"], env).stdout
    stats = json.loads(isotope(["sessions", "stats", "--json"], env).stdout)
    assert stats["total_sessions"] == 2 and stats["active_sessions"] == 1
    assert "cleaned 1 expired" in isotope(["sessions", "cleanup"], env).stdout
    assert isotope(["sessions", "delete", "cli-1"], env).returncode == 0
    missing = isotope(["sessions", "show", "cli-1"], env)
    assert missing.returncode == 1 and "cli-1" in missing.stderr and "Traceback" not in missing.stderr
    assert "schema already at version" in isotope(["migrate"], env).stdout


def test_migrate_on_an_empty_database(empty_database_url: str, data_dir: Path) -> None:
    out = isotope(["migrate"], subprocess_env(empty_database_url, data_dir))
    applied = [m.version for m in MIGRATIONS]
    assert out.returncode == 0 and f"applied migrations {applied}" in out.stdout


@pytest.mark.parametrize("script", ["simple_postgres_test.py", "test_postgres_session_persistence.py"])
def test_the_guides_test_scripts_pass(script: str, env: dict[str, str]) -> None:
    out = subprocess.run([PYTHON, script], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout and "checks passed" in out.stdout


def test_the_guides_test_script_fails_clearly_without_a_server(env: dict[str, str]) -> None:
    env["ISOTOPE_DATABASE_URL"] = "postgresql://isotope@127.0.0.1:9/isotope"
    out = subprocess.run([PYTHON, "simple_postgres_test.py"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1 and "FAIL  connection test" in out.stdout


@pytest.mark.parametrize("args, expected", [
    (["nosuch"], "No such command 'nosuch'"),
    (["doctor", "--bogus"], "No such option: --bogus"),
    (["sessions", "show"], "Missing argument"),
])
def test_bad_usage_is_one_line_and_exit_2(args: list[str], expected: str, tmp_path: Path) -> None:
    out = isotope(args, subprocess_env("postgresql://127.0.0.1:9/none", tmp_path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
