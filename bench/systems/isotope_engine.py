"""Isotope's engine turn: ``IsotopeEngine.resume_workflow`` with the offline deterministic model.

The engine produces the AI reply itself, so the harness only supplies the human text; the
stored reply is whatever the offline model says (its text is not checked, its presence is).
"""

from __future__ import annotations

from typing import Any

from bench.systems.base import System, Unavailable
from bench.systems.isotope_save import IsotopeSave


class IsotopeEngineTurn(IsotopeSave):
    name = "isotope_engine"
    label = "Isotope engine turn (resume_workflow, offline model)"
    writes_given_reply = False

    def open(self, create_schema: bool = True) -> None:
        try:
            from app.core.engine import IsotopeEngine  # noqa: PLC0415, F401 - optional until it lands
        except ImportError as exc:
            raise Unavailable(f"app.core.engine is not importable yet ({exc})") from exc
        raise Unavailable("app.core.engine exists but this adapter is not wired to it yet")

    def turn(self, session_id: str, human: str, ai: str) -> None:
        self._engine.resume_workflow(human, session_id, stream=False)

    def list_recent(self, limit: int) -> list[str] | None:
        return None  # same store and query as isotope_save; listed there


_ = (System, Any)
