"""PostgreSQL unreachable (nothing listens on the configured port): the engine keeps chatting."""

from __future__ import annotations

import pytest

from app.core.engine import IsotopeEngine
from tests.helpers import make_settings

pytestmark = pytest.mark.fault

UNREACHABLE = "postgresql://isotope@127.0.0.1:1/isotope?connect_timeout=1"


def test_turns_and_restore_go_through_the_file_store_while_postgres_is_down(data_dir):
    settings = make_settings(UNREACHABLE, data_dir, **{"store.connect_timeout_s": 0.5})
    with IsotopeEngine(config=settings) as engine:
        assert engine.manager.fallback_active
        session_id = engine.create_session(metadata={"name": "offline"})
        done = engine.resume_workflow("add task: works without the database", session_id, stream=False)
        assert done["version"] == 2

    # A restart during the outage restores from the file store and the conversation goes on.
    with IsotopeEngine(config=settings) as engine:
        result = engine.restore_result
        assert result["restored_count"] == 1 and result["backend"] == "files"
        events = list(engine.resume_workflow("list tasks", session_id))
        assert events[-1]["type"] == "done" and events[-1]["backend"] == "spool"
        assert "#1 [ ] works without the database" in [e["content"] for e in events if e["type"] == "message"]
