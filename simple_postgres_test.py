"""The guide's basic test: connection, save, load, list, statistics, delete on the configured database.

    python simple_postgres_test.py      # exit status 0 when every check passes

Uses config/config.yaml (or ISOTOPE_CONFIG / ISOTOPE_DATABASE_URL) like the application does.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from app.core.postgres_session_manager import get_postgres_session_manager

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, fn: Callable[[], Any]) -> Any:
    try:
        value = fn()
    except Exception as exc:  # a test script reports every failure and goes on
        RESULTS.append((name, False, f"{type(exc).__name__}: {exc}"))
        print(f"FAIL  {name}: {type(exc).__name__}: {exc}")
        return None
    ok = value is not False and value is not None
    RESULTS.append((name, ok, ""))
    print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return value


def main() -> int:
    manager = get_postgres_session_manager()
    session_id = f"simple-test-{uuid.uuid4().hex[:10]}"
    data = {"messages": [HumanMessage("你好"), AIMessage("Hello! How can I help?")],
            "metadata": {"source": "simple_postgres_test"}, "files": {}, "tasks": []}

    conn = check("connection test", lambda: manager.test_connection()["ok"] or False)
    if not conn:
        print(f"      {manager.test_connection().get('error')}")
    check("save session", lambda: manager.save_session(session_id, data, metadata={"name": "我的会话",
                                                                                   "user_id": "user123"},
                                                       expires_in_hours=24))
    check("load session equals what was saved", lambda: manager.load_session(session_id) == data)
    check("session is listed", lambda: any(s["session_id"] == session_id
                                           for s in manager.list_sessions(limit=1000)))
    check("statistics", lambda: manager.get_session_statistics()["total_sessions"] >= 1)
    check("soft delete", lambda: manager.delete_session(session_id, soft_delete=True))
    check("deleted session no longer loads", lambda: manager.load_session(session_id) is None or False)
    manager.delete_session(session_id, soft_delete=False)

    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 0 if not failed and conn else 1


if __name__ == "__main__":
    sys.exit(main())
