"""An engine process for the fault tests: takes turns in a loop and prints every acknowledgement.

Run as ``python -m tests.faults.worker`` with ``ISOTOPE_DATABASE_URL`` and ``ISOTOPE_DATA_DIR`` set.
It builds an :class:`~app.core.engine.IsotopeEngine` as an application would, prints
``{"ready": ...}`` and then obeys JSON lines on stdin (read by a thread, so ``stop`` interrupts a
loop between two turns). Every line it prints is flushed at once: a test that has read a
``done`` line knows the turn was acknowledged, and may kill -9 the process the next instant.

    {"op": "create", "session_id": ...}                     -> {"created": ...}
    {"op": "loop", "session_id": ..., "prefix": "A", "first": 1, "count": n | null}
        -> per turn {"event": "done", "text", "version", "backend", "started", "seconds"}
           (or "error" / "failed"), then {"event": "looped", "turns": k} when count is reached
           or after a stop
    {"op": "stop"}                                          (ends a loop after the current turn)
    {"op": "status"}                                        -> {"status": manager.status()}
    {"op": "exit"}
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from typing import Any

from app.core.engine import IsotopeEngine
from app.errors import IsotopeError

_out = threading.Lock()


def emit(**fields: Any) -> None:
    line = json.dumps(fields, default=str) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


def take_turn(engine: IsotopeEngine, session_id: str, text: str) -> None:
    started = time.time()
    clock = time.perf_counter()
    try:
        events = list(engine.resume_workflow(user_input=text, session_id=session_id, stream=True))
    except IsotopeError as exc:  # not acknowledged; the loop goes on with the next text
        emit(event="failed", text=text, error=f"{type(exc).__name__}: {exc}", started=started,
             seconds=time.perf_counter() - clock)
        return
    last = events[-1]
    if last["type"] != "done":
        emit(event="error", text=text, error=last.get("message"), started=started,
             seconds=time.perf_counter() - clock)
        return
    emit(event="done", text=text, version=last["version"], backend=last["backend"],
         messages=last["message_count"], started=started, seconds=time.perf_counter() - clock)


def loop(engine: IsotopeEngine, command: dict[str, Any], stop: threading.Event) -> None:
    count = command.get("count")
    n = command.get("first", 1)
    taken = 0
    while not stop.is_set() and (count is None or taken < count):
        take_turn(engine, command["session_id"], f"{command['prefix']} {n}")
        n += 1
        taken += 1
    emit(event="looped", turns=taken, next=n)


def main() -> int:
    engine = IsotopeEngine(config={})
    emit(ready=True, pid=os.getpid(), restored=engine.restore_result.get("restored_count"),
         status=engine.manager.status())
    commands: queue.Queue[dict[str, Any] | None] = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "stop":
                stop.set()
            elif command["op"] == "status":
                emit(status=engine.manager.status())
            else:
                commands.put(command)
        commands.put(None)

    threading.Thread(target=read, daemon=True).start()
    while (command := commands.get()) is not None and command["op"] != "exit":
        stop.clear()
        if command["op"] == "create":
            emit(created=engine.create_session(session_id=command["session_id"]))
        elif command["op"] == "loop":
            loop(engine, command, stop)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
