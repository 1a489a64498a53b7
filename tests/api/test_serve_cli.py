"""``isotope serve`` failing to start: one line saying why, no traceback, a non-zero status."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import PYTHON, free_port, subprocess_env


def serve(database_url: str, data_dir: Path, config: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = data_dir / "serve.yaml"
    path.write_text(config)
    environ = subprocess_env(database_url, data_dir, ISOTOPE_CONFIG=str(path), **env)
    return subprocess.run([PYTHON, "-m", "app.cli.main", "serve", "--port", str(free_port())], env=environ,
                          capture_output=True, text=True, timeout=60, cwd=data_dir)


def test_configuration_error_is_one_line_and_exit_2(database_url: str, data_dir: Path) -> None:
    done = serve(database_url, data_dir, "api:\n  port: not-a-port\n")
    assert done.returncode == 2
    assert "api.port" in done.stderr and "Traceback" not in done.stderr
    done = serve(database_url, data_dir, "engine:\n  model: openai\n", OPENAI_API_KEY="")
    assert done.returncode == 2
    assert "OPENAI_API_KEY" in done.stderr and "Traceback" not in done.stderr


def test_start_up_failure_is_one_line(database_url: str, data_dir: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    done = serve(database_url, data_dir, "{}\n", ISOTOPE_DATA_DIR=str(not_a_dir))
    assert done.returncode != 0
    assert "start-up failed" in done.stderr and "Not a directory" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
