"""Per-turn engine time with the offline model at a history of 10 and of 1,000 messages.

Not a test (times never gate anything): ``python -m tests.engine.turn_timing [turns]``. It uses
``ISOTOPE_DATABASE_URL`` when set, else an embedded PostgreSQL in a temporary data dir, seeds two
sessions (10 and 1,000 messages), runs one warm-up turn on each, then alternates turns between
them so both sizes see the same machine state, and prints the medians side by side. Each turn
adds two messages, so the histories grow by ``2 * turns`` during the run.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from app.core.engine import IsotopeEngine
from tests.helpers import make_settings


def history(size: int) -> list[BaseMessage]:
    text = "a message of about a hundred characters, " * 2
    return [
        HumanMessage(f"{i} {text}", id=f"h{i}") if i % 2 == 0 else AIMessage(f"{i} {text}", id=f"a{i}")
        for i in range(size)
    ]


def timed_turn(engine: IsotopeEngine, session_id: str, text: str) -> float:
    started = time.perf_counter()
    events = list(engine.resume_workflow(user_input=text, session_id=session_id, stream=True))
    elapsed = (time.perf_counter() - started) * 1000
    assert events[-1]["type"] == "done", events[-1]
    return elapsed


def main(turns: int = 50) -> None:
    with tempfile.TemporaryDirectory(prefix="isotope-timing-") as tmp:
        settings = make_settings(os.environ.get("ISOTOPE_DATABASE_URL"), Path(tmp))
        with IsotopeEngine(config=settings, restore=False) as engine:
            sessions = {}
            for size in (10, 1000):
                session_id = engine.create_session(metadata={"name": f"timing-{size}"})
                engine.manager.save(session_id, {"messages": history(size), "tasks": [], "files": {}, "metadata": {}})
                cold = timed_turn(engine, session_id, "warm-up")  # loads the session into the engine
                sessions[size] = (session_id, cold, [])
            for n in range(turns):
                for session_id, _, samples in sessions.values():
                    samples.append(timed_turn(engine, session_id, f"turn {n}"))
            backend = engine.manager.backend
    print(f"offline model, {backend} store, {turns} turns per size, alternating")
    for size, (_, cold, samples) in sessions.items():
        print(
            f"history {size:>5} msgs: median {statistics.median(samples):6.2f} ms  "
            f"p90 {statistics.quantiles(samples, n=10)[-1]:6.2f} ms  first (cold load) {cold:6.2f} ms"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
