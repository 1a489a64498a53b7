"""Isotope's engine turn: ``IsotopeEngine.resume_workflow`` with the offline deterministic model.

The engine writes its own reply, so the harness supplies only the human text and checks the
stored message count (the reply's text is the model's, shorter than the 600-character replies
the other systems store; WAL and growth are therefore not byte-for-byte comparable).
Sessions are seeded through the engine's own manager with the guide's ``save_session``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.systems.base import Unavailable
from bench.systems.isotope_save import IsotopeSave, bench_settings


class IsotopeEngineTurn(IsotopeSave):
    name = "isotope_engine"
    label = "Isotope engine turn (resume_workflow, offline model)"
    listing_note = "same store and query as isotope_save; not repeated"
    writes_given_reply = False

    def open(self, create_schema: bool = True) -> None:
        try:
            from app.core.engine import IsotopeEngine  # noqa: PLC0415 - optional until it lands
        except ImportError as exc:
            raise Unavailable(f"app.core.engine is not importable yet ({exc})") from exc
        self._data_dir = Path(tempfile.mkdtemp(prefix="isobench-data-"))
        self._states: dict[str, dict[str, Any]] = {}
        settings = bench_settings(self.url, self._data_dir, {"engine.model": "offline"})
        # restore=False: start-up restore would load every stored session, which is not a turn.
        self._engine = IsotopeEngine(settings, restore=False)
        self._manager = self._engine.manager

    def close(self) -> None:
        try:
            self._engine.close()
        finally:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def resume(self, session_id: str, history: int) -> None:
        """Nothing to hold: the engine loads (and caches) the session on its first turn."""

    def turn(self, session_id: str, human: str, ai: str) -> None:
        self._engine.resume_workflow(human, session_id, stream=False)
        if self._manager.fallback_active:
            raise RuntimeError(f"turn on {session_id!r} was saved to the outage spool, not PostgreSQL")

    def load(self, session_id: str) -> Any:
        return self._engine.get_session(session_id)

    def list_recent(self, limit: int) -> list[str] | None:
        return None
