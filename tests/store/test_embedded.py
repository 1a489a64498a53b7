"""The embedded PostgreSQL: started on demand, kept across restarts, shared by processes, fine as root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PYTHON, REPO


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A directory the embedded server's own user may traverse (pytest's base is 0700 to root; as
    root the server runs as another user, and Isotope never opens up a directory above data_dir)."""
    path = Path(tempfile.mkdtemp(prefix="isotope-emb-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(code_or_args: list[str], data_dir: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISOTOPE_")}
    config = data_dir.parent / "embedded.yaml"
    config.write_text(f"postgres_sessions: true\npostgresql:\n  embedded: true\ndata_dir: {data_dir}\n")
    env.update(ISOTOPE_CONFIG=str(config), PYTHONPATH=str(REPO))
    return subprocess.run([PYTHON, *code_or_args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
                          input=stdin)


SAVE = textwrap.dedent("""
    import sys
    from langchain_core.messages import HumanMessage
    from app.core.postgres_session_manager import get_postgres_session_manager
    m = get_postgres_session_manager()
    print(m.save_session("kept", {"messages": [HumanMessage("survives restarts")]}))
""")
LOAD = textwrap.dedent("""
    from app.core.postgres_session_manager import get_postgres_session_manager
    print(get_postgres_session_manager().load_session("kept")["messages"][0].content)
""")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_embedded_server_lifecycle(reachable_tmp: Path) -> None:
    data_dir = reachable_tmp / "data"
    first = run(["-m", "app.cli.main", "doctor", "--json"], data_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    report = json.loads(first.stdout)
    assert report["embedded"]["new_cluster"] is True and report["connection"]["server_version"].startswith("16")

    warm = json.loads(run(["-m", "app.cli.main", "doctor", "--json"], data_dir).stdout)
    assert warm["embedded"]["new_cluster"] is False
    print(f"\nembedded PostgreSQL: first start {report['embedded']['start_seconds']} s, "
          f"warm start {warm['embedded']['start_seconds']} s")
    if os.geteuid() == 0:  # PostgreSQL refuses root; the cluster belongs to an unprivileged user
        assert (data_dir / "postgres").stat().st_uid != 0

    assert run(["-c", SAVE], data_dir).stdout.strip() == "True"
    assert run(["-c", LOAD], data_dir).stdout.strip() == "survives restarts"  # a new process, a restarted server


@pytest.mark.slow
@pytest.mark.multiprocess
def test_processes_share_one_embedded_server(reachable_tmp: Path) -> None:
    tmp_path = reachable_tmp
    data_dir = tmp_path / "data"
    holder_code = textwrap.dedent("""
        import sys
        from app.core.postgres_session_manager import get_postgres_session_manager
        m = get_postgres_session_manager()
        m.test_connection()
        print(m.pg.embedded.pgdata, flush=True)
        sys.stdin.readline()          # hold the server until the parent says so
        print(m.load_session("kept")["messages"][0].content, flush=True)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISOTOPE_")}
    config = tmp_path / "embedded.yaml"
    config.write_text(f"postgresql:\n  embedded: true\ndata_dir: {data_dir}\n")
    env.update(ISOTOPE_CONFIG=str(config), PYTHONPATH=str(REPO))
    holder = subprocess.Popen([PYTHON, "-c", holder_code], env=env, cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip().endswith("postgres")
        # A second process joins the running server, writes, and exits; the server stays up.
        assert run(["-c", SAVE], data_dir).stdout.strip() == "True"
        out, err = holder.communicate("go\n", timeout=120)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode == 0, err
    assert out.strip() == "survives restarts"
