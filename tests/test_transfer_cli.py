"""``isotope sessions export|import|fork`` and ``isotope import-files``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from app.core.postgres_session_manager import SessionManager
from tests.helpers import PYTHON, REPO, make_settings, subprocess_env

pytestmark = pytest.mark.slow  # about 25 CLI processes of ~2 s each


def isotope(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([PYTHON, "-m", "app.cli.main", *args], env=env, cwd=REPO, capture_output=True,
                         input=stdin.decode() if stdin is not None else None, text=True, timeout=180)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def env_for(url: str, data_dir: Path, postgres: bool = True) -> dict[str, str]:
    data_dir.mkdir(exist_ok=True)
    config = data_dir / "config.yaml"
    config.write_text(f"postgres_sessions: {'true' if postgres else 'false'}\n")
    return subprocess_env(url, data_dir, ISOTOPE_CONFIG=str(config))


@pytest.fixture
def source(database_url: str, data_dir: Path) -> Iterator[SessionManager]:
    with SessionManager(make_settings(database_url, data_dir), use_postgres=True) as manager:
        manager.save_session("a", {"messages": [
            HumanMessage("add task: water", id="h"),
            AIMessage("", id="x", tool_calls=[{"id": "c", "name": "add_task", "args": {"title": "water"}}]),
            ToolMessage("Added task #1", tool_call_id="c", id="t")], "tasks": [{"id": 1, "cost": Decimal("2.50")}],
            "files": {"n.txt": "hi\x00there"}}, metadata={"name": "会话", "user_id": "u1"}, expires_in_hours=48)
        manager.save_session("b", {"messages": [HumanMessage("b")]}, metadata={"user_id": "u2"})
        manager.save_session("gone", {"messages": []})
        manager.delete_session("gone")
        yield manager


def test_export_to_a_file_and_import_into_an_empty_database(
        source: SessionManager, database_url: str, empty_database_url: str, data_dir: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "sessions.jsonl"
    exported = isotope(["sessions", "export", "--all", "--include-inactive", "-o", str(out_file)],
                       env_for(database_url, data_dir))
    assert exported.returncode == 0, exported.stderr
    assert f"exported 3 sessions to {out_file}" in exported.stderr
    assert [json.loads(line)["session_id"] for line in out_file.read_text().split("\n") if line] == ["a", "b", "gone"]
    assert not list(tmp_path.glob("*.partial"))

    target_env = env_for(empty_database_url, tmp_path / "target")
    imported = isotope(["sessions", "import", str(out_file)], target_env)
    assert imported.returncode == 0, imported.stderr
    assert "imported 3, skipped 0, failed 0" in imported.stdout
    with SessionManager(make_settings(empty_database_url, tmp_path / "target"), use_postgres=True) as target:
        for sid in ("a", "b"):
            assert target.load(sid).data == source.load(sid).data  # type: ignore[union-attr]
            assert target.session_info(sid) == source.session_info(sid)
        assert target.session_info("gone", include_inactive=True)["is_active"] is False  # type: ignore[index]

    again = isotope(["sessions", "import", str(out_file)], target_env)
    assert again.returncode == 0 and "imported 0, skipped 3, failed 0" in again.stdout
    assert "--on-conflict replace or new-id" in again.stdout
    replaced = isotope(["sessions", "import", str(out_file), "--on-conflict", "replace"], target_env)
    assert "imported 3 (3 replaced), skipped 0, failed 0" in replaced.stdout


def test_export_to_stdout_selects_by_id_and_user(source: SessionManager, database_url: str, data_dir: Path) -> None:
    env = env_for(database_url, data_dir)
    by_user = isotope(["sessions", "export", "--user", "u1", "-o", "-"], env)
    assert by_user.returncode == 0
    lines = by_user.stdout.split("\n")
    assert lines[-1] == "" and [json.loads(line)["session_id"] for line in lines[:-1]] == ["a"]
    assert "exported 1 sessions to stdout" in by_user.stderr
    by_id = isotope(["sessions", "export", "b", "gone", "nobody", "-o", "-"], env)
    assert by_id.returncode == 1
    assert [json.loads(line)["session_id"] for line in by_id.stdout.split("\n") if line] == ["b"]
    assert "not found: nobody" in by_id.stderr and "not exported: gone" in by_id.stderr


@pytest.mark.parametrize("args, message", [
    (["sessions", "export", "-o", "-"], "name the sessions to export"),
    (["sessions", "export", "--all"], "--output: missing"),
    (["sessions", "export", "a", "--all", "-o", "-"], "ids or --all, not both"),
    (["sessions", "import", "/nonexistent/file.jsonl"], "cannot open /nonexistent/file.jsonl"),
    (["sessions", "import", "-", "--on-conflict", "overwrite"], "--on-conflict: must be one of skip, replace, new-id"),
    (["sessions", "fork", "a", "--metadata", "[1]"], "--metadata: must be a JSON object"),
    (["sessions", "fork", "nobody"], "session 'nobody'"),
])
def test_bad_usage_is_one_clear_line(source: SessionManager, database_url: str, data_dir: Path, args: list[str],
                                     message: str) -> None:
    out = isotope(args, env_for(database_url, data_dir), stdin=b"")
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_import_reports_bad_lines_by_number_and_fails(source: SessionManager, database_url: str,
                                                      empty_database_url: str, data_dir: Path, tmp_path: Path) -> None:
    good = isotope(["sessions", "export", "a", "b", "-o", "-"], env_for(database_url, data_dir)).stdout.split("\n")
    text = "\n".join([good[0], '{"format": "isotope.session"}', good[1], "", "not json"]) + "\n"
    out = isotope(["sessions", "import", "-"], env_for(empty_database_url, tmp_path / "t"), stdin=text.encode())
    assert out.returncode == 1
    assert "imported 2, skipped 0, failed 2" in out.stdout
    assert "failed: line 2: format_version: missing" in out.stderr
    assert "failed: line 5: not valid JSON at column 1: Expecting value" in out.stderr


def test_new_id_on_conflict_says_which_id(source: SessionManager, database_url: str, data_dir: Path,
                                          tmp_path: Path) -> None:
    env = env_for(database_url, data_dir)
    line = isotope(["sessions", "export", "b", "-o", "-"], env).stdout
    out = isotope(["sessions", "import", "-", "--on-conflict", "new-id"], env, stdin=line.encode())
    assert out.returncode == 0 and "imported 1, skipped 0, failed 0" in out.stdout
    new_id = out.stdout.split("renamed: b -> ")[1].split()[0]
    assert source.load_session(new_id) == source.load_session("b")


def test_fork_prints_the_new_id(source: SessionManager, database_url: str, data_dir: Path) -> None:
    out = isotope(["sessions", "fork", "a", "--new-id", "a-branch", "--at-message", "1",
                   "--metadata", '{"name": "branch"}'], env_for(database_url, data_dir))
    assert out.returncode == 0 and out.stdout.strip() == "a-branch"
    fork = source.load("a-branch")
    assert fork is not None and fork.data["messages"] == source.load("a").data["messages"][:1]  # type: ignore[union-attr]
    assert fork.metadata == {"name": "branch"}


def test_import_files_moves_the_former_file_store(database_url: str, tmp_path: Path) -> None:
    files_dir = tmp_path / "files-data"
    files_env = env_for(database_url, files_dir, postgres=False)
    with SessionManager(make_settings(database_url, files_dir), use_postgres=False) as files:
        for i in range(5):
            files.save_session(f"old-{i}", {"messages": [HumanMessage(f"turn {i}")], "tasks": [i]},
                               metadata={"user_id": "legacy"})
        expected = {f"old-{i}": files.load(f"old-{i}") for i in range(5)}
    pg_env = env_for(database_url, tmp_path / "pg-data")
    out = isotope(["import-files", str(files_dir)], pg_env)
    assert out.returncode == 0, out.stderr
    assert "imported 5, skipped 0, failed 0" in out.stdout
    again = isotope(["import-files", str(files_dir)], pg_env)
    assert again.returncode == 0 and "imported 0, skipped 5, failed 0" in again.stdout
    with SessionManager(make_settings(database_url, tmp_path / "pg-data"), use_postgres=True) as pg:
        for sid, stored in expected.items():
            got = pg.load(sid)
            assert got is not None and stored is not None
            assert (got.data, got.metadata, got.version, got.created_at) == \
                (stored.data, stored.metadata, stored.version, stored.created_at)
    assert len(list((files_dir / "sessions").glob("*.json"))) == 5
    assert files_env  # the file store itself still works with postgres_sessions: false
    listed = json.loads(isotope(["sessions", "list", "--json"], files_env).stdout)
    assert len(listed) == 5
    missing = isotope(["import-files", str(tmp_path / "nowhere")], pg_env)
    assert missing.returncode == 1 and "no file store there" in missing.stderr
