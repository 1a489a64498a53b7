"""Whether PostgreSQL is answering, as the outage store last found out.

A failed operation *trips* the store into fallback (file copy + spool) and wakes the replayer,
whose probe *recovers* it. Saturation (:class:`~app.errors.StoreBusy`) is not an outage: it is
raised to the caller, because falling back would only move the load to the spool.
"""

from __future__ import annotations

import logging
import threading
import time

from app import metrics
from app.errors import StoreBusy

log = logging.getLogger("isotope.manager")


class Health:
    """Up, or down since when and why. ``wake`` is set on every trip (the replayer waits on it)."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.reason: str | None = None
        self.wake = threading.Event()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def trip(self, exc: BaseException, what: str) -> None:
        """Record that ``what`` failed with ``exc`` (a StoreUnavailable); StoreBusy is re-raised."""
        if isinstance(exc, StoreBusy):
            metrics.STORE_ERRORS.labels(f"{what}_busy").inc()
            raise exc
        metrics.STORE_ERRORS.labels(what).inc()
        if self.down_since is None:
            self.down_since = time.time()
            self.reason = str(exc)
            metrics.FALLBACK_ACTIVE.set(1)
            log.warning("PostgreSQL unreachable during %s (%s); using the file store and the outage "
                        "spool until it answers again", what, exc)
        self.wake.set()

    def recovered(self) -> None:
        down_for = time.time() - (self.down_since or time.time())
        self.down_since = None
        self.reason = None
        metrics.FALLBACK_ACTIVE.set(0)
        log.warning("PostgreSQL answers again after %.1f s; replaying the outage spool", down_for)
