"""A real ``isotope serve`` process for tests: free port, readiness by polling, logs kept in a file."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.helpers import PYTHON, free_port, subprocess_env

START_TIMEOUT_S = 60.0



def port_is_free(port: int) -> bool:
    """Could a server listen on ``port`` now (with SO_REUSEADDR, as uvicorn binds)?"""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ApiServer:
    """``isotope serve`` on this test's database; ``config`` is written as the YAML file it reads."""

    def __init__(self, database_url: str, data_dir: Path, config: dict[str, Any] | None = None,
                 port: int | None = None, name: str = "server", args: tuple[str, ...] = (), **env: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"{name}-{self.port}.log"
        config_path = data_dir / f"{name}-{self.port}.yaml"
        config_path.write_text(yaml.safe_dump(config or {}))
        environ = subprocess_env(database_url, data_dir, ISOTOPE_CONFIG=str(config_path), **env)
        if "ISOTOPE_API_TOKEN" not in env:  # the developer's own token must not leak into tests
            environ.pop("ISOTOPE_API_TOKEN", None)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "app.cli.main", "serve", "--port", str(self.port), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=environ, cwd=data_dir,
        )
        self.wait_healthy()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"isotope serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"isotope serve did not answer /health within {START_TIMEOUT_S} s:\n{self.log()}")

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self) -> float:
        """SIGTERM; wait for the exit; return the seconds it took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.wait_exit()
        return time.monotonic() - started

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait_exit(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
        else:
            self.wait_exit()


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse a text/event-stream body as a client does: ``event:``/``data:`` lines, blank line ends one."""
    name, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith(":"):
            continue  # a comment (keep-alive)
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].removeprefix(" "))
    if data:
        yield name, json.loads("\n".join(data))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is ``status`` with the ``{"error": {"code", "message"}}`` body; returns the error."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
