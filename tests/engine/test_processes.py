"""Behaviour across real processes: resume after exit, resume after kill -9, two engines on one session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.postgres_session_manager import SessionManager

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.py")

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


class Driver:
    """One engine process (tests/engine/driver.py) with its own data dir."""

    def __init__(self, database_url: str, data_dir: Path, enhanced: bool = False) -> None:
        env = {
            **os.environ,
            "ISOTOPE_DATABASE_URL": database_url,
            "ISOTOPE_DATA_DIR": str(data_dir),
            "PYTHONPATH": str(ROOT),
            "DRIVER_ENHANCED": "1" if enhanced else "0",
        }
        env.pop("ISOTOPE_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=data_dir,
        )
        self.ready = self.read()
        assert self.ready["ready"] is True

    def send(self, **command: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"driver exited with {self.proc.wait()}"
        return json.loads(line)

    def turn(self, session_id: str, text: str) -> list[dict]:
        self.send(op="turn", session_id=session_id, text=text)
        events = [self.read()]
        while events[-1]["type"] not in ("done", "error"):
            events.append(self.read())
        return events

    def create(self) -> str:
        self.send(op="create", metadata={"name": "multiprocess"})
        return self.read()["session_id"]

    def show(self, session_id: str) -> dict:
        self.send(op="show", session_id=session_id)
        return self.read()

    def exit(self) -> int:
        self.send(op="exit")
        return self.close()

    def kill9(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return self.close()

    def close(self) -> int:
        """Wait for the process (killing it if a failed test left it running) and close the pipes."""
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def spawn(database_url, tmp_path):
    """Start driver processes by name (each its own data dir); all are reaped after the test."""
    started: list[Driver] = []

    def start(name: str) -> Driver:
        path = tmp_path / name
        path.mkdir()
        started.append(Driver(database_url, path))
        return started[-1]

    yield start
    for driver in started:
        if driver.proc.poll() is None:
            driver.proc.kill()
        driver.close()


def test_resume_in_a_new_process(spawn):
    first = spawn("one")
    session_id = first.create()
    first.turn(session_id, "add task: survive the restart")
    first.turn(session_id, "save file note.txt: still here")
    assert first.turn(session_id, "hello")[-1]["version"] == 4
    assert first.exit() == 0

    second = spawn("two")
    assert second.ready["restored"] >= 1
    events = second.turn(session_id, "list tasks")
    assert events[-1]["type"] == "done" and events[-1]["version"] == 5
    assert any(e["type"] == "message" and e["content"] == "#1 [ ] survive the restart" for e in events)
    reply = [e for e in second.turn(session_id, "and the file?") if e["type"] == "message"][0]
    assert reply["content"].startswith("Turn 5:")
    assert second.show(session_id)["files"] == {"note.txt": "still here"}
    assert second.exit() == 0


@pytest.mark.fault
def test_kill_9_right_after_done_loses_nothing(spawn):
    victim = spawn("victim")
    session_id = victim.create()
    victim.turn(session_id, "add task: written before the crash")
    done = victim.turn(session_id, "the last words")[-1]
    assert done["type"] == "done"
    assert victim.kill9() == -signal.SIGKILL  # no shutdown code ran

    heir = spawn("heir")
    state = heir.show(session_id)
    assert len(state["messages"]) == done["message_count"] == 6
    assert state["messages"][-2] == ["human", "the last words"]
    assert state["tasks"] == [{"id": 1, "title": "written before the crash", "done": False}]
    events = heir.turn(session_id, "still there?")
    assert events[-1]["version"] == done["version"] + 1
    assert [e for e in events if e["type"] == "message"][0]["content"].startswith("Turn 3:")
    assert heir.exit() == 0


def test_two_processes_fifteen_turns_each_on_one_session(spawn, settings):
    turns = 15
    a, b = spawn("a"), spawn("b")
    session_id = a.create()
    # Both are ready and idle; the two commands go out back to back so the turns overlap.
    a.send(op="turns", session_id=session_id, prefix="A", count=turns)
    b.send(op="turns", session_id=session_id, prefix="B", count=turns)
    done_a = [a.read() for _ in range(turns)]
    done_b = [b.read() for _ in range(turns)]
    assert a.exit() == 0 and b.exit() == 0
    assert all(e["type"] == "done" for e in done_a + done_b)

    versions = sorted(e["version"] for e in done_a + done_b)
    assert versions == list(range(2, 2 + 2 * turns))  # every turn stored exactly once, none lost
    for done in (done_a, done_b):
        own = [e["version"] for e in done]
        assert own == sorted(own)  # each process's turns in its own order

    with SessionManager(settings, use_postgres=True) as store:
        stored = store.load(session_id)
    assert stored.version == 1 + 2 * turns and stored.message_count == 4 * turns
    messages = stored.data["messages"]
    humans = [m.content for m in messages if m.type == "human"]
    assert sorted(humans) == sorted(
        [f"A turn {n}" for n in range(1, turns + 1)] + [f"B turn {n}" for n in range(1, turns + 1)]
    )
    assert [h for h in humans if h.startswith("A")] == [f"A turn {n}" for n in range(1, turns + 1)]
    assert [h for h in humans if h.startswith("B")] == [f"B turn {n}" for n in range(1, turns + 1)]
    # Turns never interleave, and each one saw every earlier turn: its reply numbers it after all
    # of them and quotes the previous human message, whichever process wrote that.
    for n in range(2 * turns):
        human, ai = messages[2 * n], messages[2 * n + 1]
        assert human.type == "human" and ai.type == "ai"
        if n == 0:
            assert ai.content.startswith(f"Turn 1: hello! You said “{human.content}”")
        else:
            previous = messages[2 * n - 2].content
            assert ai.content.startswith(f"Turn {n + 1}: you said “{human.content}”; before that, “{previous}”")
    switches = sum(1 for x, y in zip(humans, humans[1:], strict=False) if x[0] != y[0])
    print(f"\ntwo processes x {turns} turns: versions 2..{1 + 2 * turns}, {switches} switches between processes")
