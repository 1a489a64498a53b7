"""The guide's full test of PostgreSQL session persistence, against the configured database.

    python test_postgres_session_persistence.py      # exit status 0 when every check passes

Covers: the connection; LangChain messages of every kind round-tripping; versions; metadata;
expiry and cleanup; soft and hard delete; statistics; restore of all sessions; persistence across
a process restart (a child process loads what this one saved); the engine's create_session and
resume_workflow. Everything it creates is removed at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage

from app.core.postgres_session_manager import get_postgres_session_manager

RESULTS: list[tuple[str, bool]] = []
PREFIX = f"persistence-test-{uuid.uuid4().hex[:8]}"


def check(name: str, fn: Callable[[], Any]) -> Any:
    try:
        value = fn()
    except Exception as exc:  # report and go on: a test script shows every failure
        print(f"FAIL  {name}: {type(exc).__name__}: {exc}")
        RESULTS.append((name, False))
        return None
    ok = value is not False and value is not None
    print(f"{'PASS' if ok else 'FAIL'}  {name}")
    RESULTS.append((name, ok))
    return value


def sample_state() -> dict[str, Any]:
    call = {"name": "add_task", "args": {"title": "write report"}, "id": "call-1"}
    return {
        "messages": [
            SystemMessage("You are Isotope."),
            HumanMessage("add task: write report", id="m1"),
            AIMessage("", tool_calls=[call], id="m2"),
            ToolMessage("Task 1 added", tool_call_id="call-1"),
            AIMessageChunk(content="Added ", id="m3"),
            AIMessage("Added task 1.", response_metadata={"at": dt.datetime.now(dt.UTC)}),
        ],
        "tasks": [{"id": 1, "title": "write report", "done": False}],
        "files": {"notes.md": "# Notes\n"},
        "metadata": {"turns": 1},
    }


def child_loads(session_id: str, expected_version: int) -> bool:
    code = (
        "import sys; from app.core.postgres_session_manager import get_postgres_session_manager as g;"
        f"s = g().load({session_id!r}); sys.exit(0 if s is not None and s.version == {expected_version} "
        "and len(s.data['messages']) == 7 else 1)"
    )
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ), timeout=120).returncode == 0


def main() -> int:
    manager = get_postgres_session_manager()
    sid = f"{PREFIX}-main"
    state = sample_state()

    check("connection test reports ok", lambda: manager.test_connection()["ok"] or False)
    check("save returns True", lambda: manager.save_session(sid, state, metadata={"name": "新会话"},
                                                            expires_in_hours=24))
    check("every message kind round-trips equal", lambda: manager.load_session(sid) == state)
    state["messages"].append(HumanMessage("list tasks"))
    check("second save", lambda: manager.save_session(sid, state))
    check("version is 2 after two saves", lambda: manager.session_info(sid)["version"] == 2)
    check("metadata kept when not given", lambda: manager.session_info(sid)["metadata"] == {"name": "新会话"})
    check("expiry is timezone-aware, about 24 h ahead", lambda: abs(
        (manager.session_info(sid)["expires_at"] - dt.datetime.now(dt.UTC)).total_seconds() - 86400) < 120)
    check("a new process loads the same session (restart)", lambda: child_loads(sid, 2))

    expired = f"{PREFIX}-expired"
    manager.save_session(expired, sample_state(), expires_in_hours=0)
    check("expired session does not load", lambda: manager.load_session(expired) is None or False)
    check("cleanup deactivates the expired session", lambda: manager.cleanup_expired_sessions() >= 1)
    check("restore_all_sessions restores the active one", lambda: sid in manager.restore_all_sessions(
        include_data=True)["sessions"])
    stats = check("statistics", manager.get_session_statistics)
    if stats:
        print(f"      total sessions: {stats['total_sessions']}, active: {stats['active_sessions']}, "
              f"average messages: {stats['avg_messages_per_session']}")
    check("soft delete", lambda: manager.delete_session(sid, soft_delete=True))
    check("soft-deleted session does not load", lambda: manager.load_session(sid) is None or False)

    try:
        from app.core.engine import IsotopeEngine
    except ImportError as exc:
        print(f"FAIL  engine import: {exc}")
        RESULTS.append(("engine import", False))
    else:
        engine = IsotopeEngine(enable_postgres_sessions=True)
        engine_sid = check("engine creates a session", lambda: engine.create_session(
            metadata={"name": "新会话", "user_id": "user123"}))
        if engine_sid:
            events = check("engine turn streams events ending in done", lambda: [
                e for e in engine.resume_workflow(user_input="你好", session_id=engine_sid, stream=True)])
            check("the turn is stored", lambda: bool(events) and events[-1]["type"] == "done"
                  and manager.session_info(engine_sid)["message_count"] >= 2)
            manager.delete_session(engine_sid, soft_delete=False)
        close = getattr(engine, "close", None)
        if close:
            close()

    for session_id in (sid, expired):
        manager.delete_session(session_id, soft_delete=False)
    failed = [name for name, ok in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
