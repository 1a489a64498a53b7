"""Parent-side helpers of the fault tests: engine worker processes and what PostgreSQL holds."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import PYTHON, REPO, pooled_config, subprocess_env


class WorkerDied(AssertionError):
    pass


class Worker:
    """One ``tests.faults.worker`` process. Its stdout is read by a thread into a queue, so the
    test can wait for a line with a deadline while the worker keeps taking turns."""

    def __init__(self, database_url: str, data_dir: Path, name: str = "worker", wait_ready: bool = True,
                 config: dict[str, Any] | None = None, **env: str) -> None:
        self.name = name
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        environ = subprocess_env(database_url, data_dir, **env)
        environ["ISOTOPE_CONFIG"] = str(data_dir / "worker-config.yaml")
        config = dict(config or {})
        for section, values in pooled_config().items():  # PgBouncer mode (tests/helpers.py)
            config[section] = {**values, **config.get(section, {})}
        (data_dir / "worker-config.yaml").write_text(json.dumps(config) + "\n")  # JSON is YAML
        self.stderr_path = data_dir / f"{name}-{time.time_ns()}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen([PYTHON, "-m", "tests.faults.worker"], cwd=REPO, env=environ,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, bufsize=1)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.acked: list[dict[str, Any]] = []  # every done line, in the order printed
        self.unacked: list[dict[str, Any]] = []  # error and failed lines
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ready = self.expect("ready", timeout=120) if wait_ready else {}

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            record = json.loads(line)
            if record.get("event") == "done":
                self.acked.append(record)
            elif record.get("event") in ("error", "failed"):
                self.unacked.append(record)
            self.lines.put(record)
        self.lines.put(None)

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def expect(self, key: str, timeout: float = 60, value: Any = None) -> dict[str, Any]:
        """The next line holding ``key`` (an ``event`` name or a top-level key); others are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {key!r} line within {timeout} s; stderr:\n{self.stderr()}")
            try:
                record = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if record is None:
                raise WorkerDied(f"{self.name} exited ({self.proc.wait()}) before {key!r}; stderr:\n"
                                 f"{self.stderr()}")
            if record.get("event") == key or key in record:
                return record

    def wait_acked(self, count: int, timeout: float = 60) -> None:
        """Until at least ``count`` turns are acknowledged in total."""
        while len(self.acked) < count:
            self.expect("done", timeout=timeout)

    def create(self, session_id: str) -> str:
        self.send(op="create", session_id=session_id)
        return str(self.expect("created")["created"])

    def loop(self, session_id: str, prefix: str, first: int = 1, count: int | None = None) -> None:
        self.send(op="loop", session_id=session_id, prefix=prefix, first=first, count=count)

    def stop_loop(self, timeout: float = 60) -> dict[str, Any]:
        self.send(op="stop")
        return self.expect("looped", timeout=timeout)

    def status(self) -> dict[str, Any]:
        self.send(op="status")
        return self.expect("status")["status"]  # type: ignore[no-any-return]

    def exit(self, timeout: float = 60) -> int:
        self.send(op="exit")
        return self.close(timeout)

    def kill9(self) -> int:
        os.kill(self.proc.pid, signal.SIGKILL)
        return self.close()

    def close(self, timeout: float = 60) -> int:
        """Wait for the process to exit (kill it after ``timeout``), then release its pipes."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        finally:
            self._reader.join(timeout=10)
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(BrokenPipeError):
                        pipe.close()
            self._stderr.close()
        return code

    def reap(self) -> None:
        """After a test, pass or fail: no process left behind."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reap()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def spool_depth(data_dir: Path) -> int:
    root = data_dir / "spool"
    if not root.is_dir():
        return 0
    return sum(1 for e in os.scandir(root) if e.name.endswith(".json") and not e.name.startswith("."))


def wait_until(condition: Any, timeout: float, what: str, every: float = 0.02) -> float:
    """Poll ``condition`` until true (a deadline, not a fixed wait); return the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not true within {timeout} s")
        time.sleep(every)
    return time.monotonic() - started


def stored_humans(database_url: str, session_id: str) -> list[str]:
    """The text of every human message PostgreSQL holds for the session, in stored order."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT message->>'content' FROM isotope_messages WHERE session_id = %s"
            " AND message->>'type' = 'human' ORDER BY seq", (session_id,)).fetchall()
    return [r[0] for r in rows]


def stored_row(database_url: str, session_id: str) -> tuple[int, int, int]:
    """(version, message count in the row, message rows) of the session in PostgreSQL."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT version, (session_data #>> '{messages,count}')::int,"
            " (SELECT count(*) FROM isotope_messages m WHERE m.session_id = s.session_id)"
            " FROM isotope_sessions s WHERE session_id = %s", (session_id,)).fetchone()
    assert row is not None, f"session {session_id!r} is not in PostgreSQL"
    return int(row[0]), int(row[1]), int(row[2])


def stored_pairs_ok(database_url: str, session_id: str) -> list[str]:
    """Problems with the message rows: gaps in seq, or a human not followed by its reply."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute("SELECT seq, message->>'type', message->>'content' FROM isotope_messages"
                            " WHERE session_id = %s ORDER BY seq", (session_id,)).fetchall()
    problems = [f"seq {r[0]} at position {i}" for i, r in enumerate(rows) if r[0] != i]
    for i in range(0, len(rows) - 1, 2):
        if rows[i][1] != "human" or rows[i + 1][1] != "ai":
            problems.append(f"messages {i}, {i + 1} are {rows[i][1]}, {rows[i + 1][1]}")
            break
    return problems


@dataclass
class Audit:
    """Acknowledged turns against what PostgreSQL holds."""

    acknowledged: int
    lost: list[str]
    duplicated: list[str]
    out_of_order: list[str]
    unacknowledged_stored: int
    stored: list[str] = field(repr=False)


def audit(database_url: str, session_id: str, acked_by_instance: dict[str, list[str]]) -> Audit:
    """Every acknowledged text is stored exactly once, and each instance's in its own order.

    Texts of turns that were never acknowledged (killed mid-turn) may be stored, once at most.
    """
    stored = stored_humans(database_url, session_id)
    counts = Counter(stored)
    acked = [t for texts in acked_by_instance.values() for t in texts]
    lost = [t for t in acked if counts[t] == 0]
    duplicated = sorted(t for t, n in counts.items() if n > 1)
    position = {t: i for i, t in enumerate(stored)}
    out_of_order = []
    for name, texts in acked_by_instance.items():
        places = [position[t] for t in texts if t in position]
        if places != sorted(places):
            out_of_order.append(name)
    acked_set = set(acked)
    return Audit(acknowledged=len(acked), lost=lost, duplicated=duplicated, out_of_order=out_of_order,
                 unacknowledged_stored=sum(1 for t in stored if t not in acked_set), stored=stored)
