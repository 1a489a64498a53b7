"""An engine process for the cross-process tests, driven by JSON lines on stdin.

Run as ``python tests/engine/driver.py`` with ``ISOTOPE_DATABASE_URL`` and ``ISOTOPE_DATA_DIR`` set.
It builds an ``IsotopeEngine`` exactly as an application would, prints ``{"ready": ...}``, then
answers one command per line, printing JSON lines and flushing after each (so a test that has
read a ``done`` line knows the turn is durable, and may kill -9 the process at once):

    {"op": "create", "metadata": {...}}               -> {"session_id": ...}
    {"op": "turn", "session_id": ..., "text": ...}    -> one line per non-token event
    {"op": "turns", "session_id": ..., "prefix": ..., "count": n}
                                                      -> the done/error event of each turn
    {"op": "show", "session_id": ...}                 -> {"messages": [[type, text]...], "tasks", "files"}
    {"op": "exit"}
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from app.core.engine import IsotopeEngine


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def turn(engine: IsotopeEngine, session_id: str, text: str, quiet: bool = False) -> None:
    for event in engine.resume_workflow(user_input=text, session_id=session_id, stream=True):
        if event["type"] == "token" or (quiet and event["type"] not in ("done", "error")):
            continue
        emit({**event, "pid": os.getpid()})


def main() -> int:
    engine = IsotopeEngine(config={"enhanced_graph": os.environ.get("DRIVER_ENHANCED") == "1"})
    emit({"ready": True, "pid": os.getpid(), "restored": engine.restore_result.get("restored_count")})
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "create":
            emit({"session_id": engine.create_session(metadata=command.get("metadata"))})
        elif op == "turn":
            turn(engine, command["session_id"], command["text"])
        elif op == "turns":
            for n in range(1, command["count"] + 1):
                turn(engine, command["session_id"], f"{command['prefix']} turn {n}", quiet=True)
        elif op == "show":
            state = engine.get_session(command["session_id"])
            messages = [[m.type, m.text] for m in state["messages"]]
            emit({"messages": messages, "tasks": state["tasks"], "files": state["files"]})
        elif op == "exit":
            break
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
