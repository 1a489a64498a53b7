"""The chat command: two runs, two processes, one conversation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import chat as chat_module
from app.core.engine import IsotopeEngine

ROOT = Path(__file__).resolve().parents[2]


def run_chat(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ISOTOPE_DATABASE_URL": database_url,
        "ISOTOPE_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    env.pop("ISOTOPE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "app.cli.chat", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=data_dir,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_runs_continue_the_same_conversation(database_url, tmp_path):
    first = run_chat(database_url, tmp_path, "--new", "--name", "demo", "-m", "add task: ship v1", "-m", "hello")
    assert first.returncode == 0, first.stdout + first.stderr
    session_id = re.search(r"New session (\w+)", first.stdout).group(1)
    assert "Added task #1: ship v1" in first.stdout
    assert f"session id: {session_id}" in first.stdout

    second = run_chat(database_url, tmp_path, "--session", session_id, "-m", "list tasks", "-m", "still me")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"Session {session_id} (6 messages)" in second.stdout
    assert "#1 [ ] ship v1" in second.stdout
    assert "Turn 4: you said “still me”; before that, “list tasks”" in second.stdout


@pytest.mark.multiprocess
def test_unknown_session_exits_1_without_creating_one(database_url, tmp_path):
    result = run_chat(database_url, tmp_path, "--session", "nope", "-m", "hi")
    assert result.returncode == 1
    assert "session 'nope'" in result.stdout and "without --session" in result.stdout


def test_in_process_with_stdin_lines(settings, database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("ISOTOPE_DATABASE_URL", database_url)
    monkeypatch.setenv("ISOTOPE_DATA_DIR", str(settings.data_dir))
    monkeypatch.chdir(tmp_path)
    app = chat_module.app
    result = CliRunner().invoke(app, ["--new"], input="save file a.md: [bold]x[/]\nread file a.md\n/exit\n")
    assert result.exit_code == 0, result.output
    assert "Saved file a.md" in result.output and "[bold]x[/]" in result.output
    assert "session id:" in result.output


def test_the_picker_lists_recent_sessions_and_resumes_the_choice(settings, database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("ISOTOPE_DATABASE_URL", database_url)
    monkeypatch.setenv("ISOTOPE_DATA_DIR", str(settings.data_dir))
    monkeypatch.chdir(tmp_path)
    with IsotopeEngine(config=settings) as engine:
        older = engine.create_session(metadata={"name": "older"})
        newer = engine.create_session(metadata={"name": "newer"})
        engine.resume_workflow("remember me", newer, stream=False)
        engine.resume_workflow("me too", older, stream=False)  # now the most recent
    result = CliRunner().invoke(chat_module.app, [], input="2\nwho am I?\n/exit\n")
    assert result.exit_code == 0, result.output
    assert "Recent sessions" in result.output and "older" in result.output and "newer" in result.output
    assert f"Session {newer} (2 messages)" in result.output
    assert "Turn 2: you said “who am I?”; before that, “remember me”" in result.output
