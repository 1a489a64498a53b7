"""The guide's expiry workflow, run by the server: every ``api.cleanup_interval_s`` deactivate the
expired sessions and, when ``api.hard_delete_after_hours`` is set, remove what has been inactive
that long.

**Several instances.** Each pass first takes the job's lock without waiting (the same advisory
lock the turns use, keyed by an internal id that no session id can equal, so it spans every
instance on the database and no client's session can hold it; a file
lock while PostgreSQL is down). The instance that gets it does the pass; the others count a
``skipped`` run and try again next interval. The store's statements are per-session and
conditional besides, so even two overlapping passes could not change a session twice or fail.
"""

from __future__ import annotations

import asyncio
import logging
import random

import anyio

from app.api import metrics
from app.config import ApiConfig
from app.core.postgres_session_manager import SessionManager
from app.errors import IsotopeError, SessionBusy
from app.store.base import internal_lock_id

log = logging.getLogger("isotope.api.cleanup")

JOB_LOCK_ID = internal_lock_id("job:expiry")  # outside the session id space: no client can hold it


def run_once(manager: SessionManager, config: ApiConfig) -> dict[str, int] | None:
    """One pass; the counts, or None when another instance holds the job."""
    try:
        with manager.lock(JOB_LOCK_ID, timeout=0):
            deactivated = manager.cleanup_expired_sessions(hard_delete=False)
            deleted = 0
            if config.hard_delete_after_hours is not None:
                deleted = manager.cleanup_expired_sessions(
                    hard_delete=True, inactive_for_hours=config.hard_delete_after_hours)
    except SessionBusy:
        metrics.CLEANUP_RUNS.labels("skipped").inc()
        log.debug("expiry pass skipped: another instance is running it")
        return None
    metrics.CLEANUP_RUNS.labels("done").inc()
    metrics.CLEANUP_SESSIONS.labels("deactivated").inc(deactivated)
    metrics.CLEANUP_SESSIONS.labels("deleted").inc(deleted)
    if deactivated or deleted:
        log.info("expiry pass: deactivated %d, removed %d sessions", deactivated, deleted)
    return {"deactivated": deactivated, "deleted": deleted}


async def periodic(manager: SessionManager, config: ApiConfig) -> None:
    """Run passes forever (cancel the task to stop). A failed pass is logged and retried next time."""
    interval = config.cleanup_interval_s
    # Instances started together would otherwise always collide on the same tick.
    await asyncio.sleep(interval * random.uniform(0.1, 1.0))
    while True:
        try:
            await anyio.to_thread.run_sync(run_once, manager, config, abandon_on_cancel=True)
        except IsotopeError as exc:
            metrics.CLEANUP_RUNS.labels("failed").inc()
            log.warning("expiry pass failed (%s); next try in %g s", exc, interval)
        await asyncio.sleep(interval)
