"""Operations: ``/health`` (the process answers), ``/ready`` (a store takes writes), ``/metrics``.

None of them needs the bearer token: orchestrators and Prometheus probe them.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app import metrics as core_metrics
from app.api import metrics
from app.api.context import ApiState, api_state
from app.api.models import HealthOut, ReadyOut
from app.api.redact import scrub
from app.api.responses import JSONBody
from app.errors import IsotopeError

log = logging.getLogger("isotope.api")
router = APIRouter(tags=["operations"])
State = Annotated[ApiState, Depends(api_state)]


@router.get("/health", response_model=HealthOut)
async def health() -> dict[str, str]:
    """The process is alive and answering (says nothing about the store)."""
    return {"status": "ok"}


@router.get("/ready", response_model=None, responses={200: {"model": ReadyOut}, 503: {"model": ReadyOut}})
def ready(state: State) -> JSONBody:
    """Ready when PostgreSQL answers (``store: postgres``), or when it does not but the outage
    fallback takes the writes (``store: fallback``), or with the file store (``store: files``).
    503 while starting, shutting down, or when no store could take a write; its body carries the
    standard ``error`` member besides the status."""
    body = _store_status(state)
    if state.lifecycle.closing:
        body.update(ready=False, reason="shutting down")
    elif not state.lifecycle.ready:
        body.update(ready=False, reason="starting")
    if body["ready"]:
        return JSONBody(body)
    body["error"] = {"code": "not_ready", "message": f"not ready: {body['reason']}"}
    return JSONBody(body, status_code=503, headers={"Retry-After": "1"})


def _store_status(state: State) -> dict[str, object]:
    manager = state.manager
    if manager.backend == "postgres" and not manager.fallback_active:
        try:
            manager.test_connection()  # trips the fallback if PostgreSQL stopped answering
        except IsotopeError as exc:
            log.warning("readiness check: %s", exc)
    status = manager.status()
    store = "fallback" if status["fallback_active"] else status["backend"]
    writable = os.access(state.settings.data_dir, os.W_OK)
    body: dict[str, object] = {"ready": store != "fallback" or writable, "store": store,
                               "fallback_active": status["fallback_active"], "spool_depth": status["spool_depth"]}
    if status["fallback_active"]:
        body["reason"] = scrub(f"PostgreSQL unreachable ({status['reason']}); writes go to the outage spool")
        if not writable:
            body["reason"] = f"PostgreSQL unreachable and {state.settings.data_dir} is not writable"
    return body


@router.get("/metrics", response_class=Response, responses={200: {"content": {metrics.CONTENT_TYPE: {}}}})
def prometheus(state: State) -> Response:
    """Prometheus text format: turns, turn/save/load latency, store errors, fallback, sessions, HTTP."""
    try:
        core_metrics.SESSIONS_ACTIVE.set(state.manager.count_sessions())
        state.manager.status()  # refreshes the spool depth gauge
    except IsotopeError as exc:
        log.warning("metrics: could not count sessions: %s", exc)
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)
