"""The curl lines of the README's HTTP API section (the guide's three and the chat ones) run as printed.

They name ``localhost:8000``, so the server is started on port 8000 when it is free. When something
else holds the port, the same lines run against a free port instead (only the port is rewritten)
and the test says so in its output.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.api.server import ApiServer, port_is_free
from tests.helpers import REPO

pytestmark = pytest.mark.slow
PORT = 8000


def readme_curl_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## HTTP API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [b for b in blocks if "curl " in b]


def test_readme_has_the_guide_curl_lines() -> None:
    lines = "\n".join(readme_curl_blocks())
    for line in ("curl http://localhost:8000/api/sessions/postgres/connection/test",
                 "curl http://localhost:8000/api/sessions/postgres/statistics",
                 "curl -X POST http://localhost:8000/api/sessions/postgres/restore"):
        assert line in lines.splitlines()


def test_readme_curl_lines_run_as_printed(database_url: str, data_dir: Path) -> None:
    port = PORT if port_is_free(PORT) else None
    server = ApiServer(database_url, data_dir, port=port)
    outputs = []
    try:
        for block in readme_curl_blocks():
            script = block if port == PORT else block.replace("localhost:8000", f"localhost:{server.port}")
            if port != PORT:
                print(f"port {PORT} is busy: the README's lines ran against port {server.port}")
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                                  timeout=60, cwd=data_dir)
            assert done.returncode == 0, (script, done.stdout, done.stderr)
            outputs.append(done.stdout)
    finally:
        server.stop()
    guide, chat = outputs
    assert '"ok":true' in guide and '"total_sessions"' in guide and '"restored_count"' in guide
    assert "event: token" in chat and "event: tool_call" in chat and "event: done" in chat
    assert '"response":' in chat and '"messages":' in chat and '"deleted":true' in chat
    assert '"error"' not in guide + chat
