"""What the routes share: settings, the manager and engine, the server's lifecycle, the restore record."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import Request

from app.config import Settings
from app.core.engine import IsotopeEngine
from app.core.postgres_session_manager import SessionManager

if TYPE_CHECKING:
    from app.api.turn_streams import TurnStreams

log = logging.getLogger("isotope.api")

# Past the grace period a turn still running gets this long to report how it ended.
REPORT_MARGIN_S = 1.0


class Lifecycle:
    """Starting, serving, shutting down. ``begin_shutdown`` may be called from a signal handler, so
    it only records the time; everything else reads that time."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.ready = False
        self.closing_since: float | None = None

    def begin_shutdown(self) -> None:
        if self.closing_since is None:
            self.closing_since = time.monotonic()

    @property
    def closing(self) -> bool:
        return self.closing_since is not None

    def abandon_at(self) -> float | None:
        """When turns still running are abandoned (None while not shutting down)."""
        return None if self.closing_since is None else self.closing_since + self.grace_s

    def past_grace(self) -> bool:
        deadline = self.abandon_at()
        return deadline is not None and time.monotonic() >= deadline

    def report_deadline(self) -> float | None:
        deadline = self.abandon_at()
        return None if deadline is None else deadline + REPORT_MARGIN_S


@dataclass
class ApiState:
    """Everything a route needs, hung on ``app.state.isotope``."""

    settings: Settings
    manager: SessionManager
    engine: IsotopeEngine
    lifecycle: Lifecycle
    turns: TurnStreams | None = None
    restored: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None

    def restore(self, trigger: str) -> dict[str, Any]:
        """Load the active sessions into the engine's memory (the guide's restart workflow) and
        record what came back, for ``GET /api/sessions/restored``. Never raises for a store outage."""
        result = dict(self.engine.restore_sessions())
        errors = [e if isinstance(e, dict) else {"error": str(e)} for e in result.get("errors", [])]
        self.restored = {
            "restored_count": result.get("restored_count", 0),
            "failed_count": result.get("failed_count", 0),
            "session_ids": list(result.get("session_ids", [])),
            "failed_session_ids": list(result.get("failed_session_ids", [])),
            "errors": errors,
            "restored_at": datetime.now(UTC).isoformat(),
            "duration_s": result.get("duration_s"),
            "backend": result.get("backend", self.manager.backend),
            "trigger": trigger,
        }
        return self.restored


def api_state(request: Request) -> ApiState:
    """FastAPI dependency: the app's shared state."""
    state: ApiState = request.app.state.isotope
    return state
