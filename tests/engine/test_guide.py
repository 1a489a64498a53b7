"""The user guide's engine samples, verbatim, against a real database named by the environment."""

from __future__ import annotations

from pathlib import Path


def test_configuration_method_1(guide_env):
    from app.core.engine import IsotopeEngine

    # enable PostgreSQL session persistence
    engine = IsotopeEngine(
        config={
            "postgres_sessions": True,  # enable PostgreSQL session persistence
            "enhanced_graph": True,  # recommended: enable the enhanced graph as well
        },
        enable_postgres_sessions=True,
        verbose=True,
    )
    try:
        assert engine.settings.postgres_sessions and engine.settings.engine.enhanced_graph
        assert engine.graph.name == "isotope-enhanced"
    finally:
        engine.close()


def test_configuration_method_2_the_file_decides(guide_env):
    from app.core.engine import IsotopeEngine

    # The guide's config/config.yaml; guide_env names it through ISOTOPE_CONFIG.
    Path(guide_env["ISOTOPE_CONFIG"]).write_text("postgres_sessions: false\n")
    with IsotopeEngine() as engine:
        session_id = engine.create_session()
        assert engine.resume_workflow("hi", session_id, stream=False)["version"] == 2
        assert engine.manager.load(session_id).backend == "files"
    # The argument wins over the file.
    with IsotopeEngine(enable_postgres_sessions=True) as engine:
        assert engine.settings.postgres_sessions is True


def test_engine_integration(guide_env, capsys):
    from app.core.engine import IsotopeEngine

    engine = IsotopeEngine(enable_postgres_sessions=True)

    # create a session (saved to PostgreSQL automatically)
    session_id = engine.create_session(
        metadata={"name": "新会话", "user_id": "user123"}  # "new session"
    )

    # process a message (session state saved to PostgreSQL automatically)
    for message in engine.resume_workflow(
        user_input="你好",  # "hello"
        session_id=session_id,
        stream=True,
    ):
        print(message)

    # after a service restart sessions are restored automatically:
    # engine._restore_existing_sessions() is called during initialisation
    restored = engine._restore_existing_sessions()
    engine.close()

    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith("{'type': 'done'") and f"'session_id': '{session_id}'" in printed[-1]
    assert any("你好" in line and "'type': 'message'" in line for line in printed)
    assert restored["restored_count"] >= 1 and restored["failed_count"] == 0

    from app.core.postgres_session_manager import get_postgres_session_manager

    manager = get_postgres_session_manager()
    stored = manager.load_session(session_id)
    assert stored["messages"][0].content == "你好"


def test_debugging_form(guide_env, caplog):
    from app.core.engine import IsotopeEngine

    with caplog.at_level("INFO", logger="isotope"):
        engine = IsotopeEngine(verbose=True, enable_postgres_sessions=True)
        engine.close()
    assert any("engine ready" in r.getMessage() and "store=postgres" in r.getMessage() for r in caplog.records)
