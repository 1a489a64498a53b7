"""The guide's endpoints, at exactly its paths.

Plain ``def`` routes: the manager is synchronous, so FastAPI runs them in its thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.context import ApiState, api_state
from app.api.models import (
    CleanupOut,
    ConnectionTestOut,
    RestoredOut,
    RestoreOut,
    SessionIdPath,
    SessionListOut,
    SessionOut,
    StatisticsOut,
    error_responses,
)
from app.api.redact import scrub
from app.api.responses import JSONBody
from app.api.security import require_token
from app.core.present import info_json, jsonable, session_json
from app.errors import SessionNotFound
from app.store.base import MAX_EXPIRES_IN_HOURS

router = APIRouter(dependencies=[Depends(require_token)], responses=error_responses(401, 503))
State = Annotated[ApiState, Depends(api_state)]


def _json(value: object) -> JSONBody:
    return JSONBody(jsonable(value))


@router.get("/api/sessions/postgres/sessions", tags=["guide"], response_model=None,
            responses={200: {"model": SessionListOut}, **error_responses(422)})
def list_sessions(
    state: State,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    include_inactive: bool = False,
) -> JSONBody:
    """Sessions, most recently updated first, as the manager lists them."""
    rows = state.manager.list_sessions(limit=limit, offset=offset, include_inactive=include_inactive)
    total = state.manager.count_sessions(include_inactive=include_inactive)
    return _json({"sessions": [info_json(r) for r in rows], "limit": limit, "offset": offset, "total": total})


@router.get("/api/sessions/postgres/sessions/{session_id:path}", tags=["guide"], response_model=None,
            responses={200: {"model": SessionOut}, **error_responses(404, 422)})
def get_session(session_id: SessionIdPath, state: State) -> JSONBody:
    """One session: messages (type, content, tool calls), tasks, files, metadata, version, timestamps."""
    stored = state.manager.load(session_id)
    if stored is None:
        raise SessionNotFound(session_id)
    return _json(session_json(stored))


@router.get("/api/sessions/postgres/statistics", tags=["guide"], response_model=None,
            responses={200: {"model": StatisticsOut}})
def statistics(state: State) -> JSONBody:
    """The manager's statistics."""
    return _json(state.manager.get_session_statistics())


@router.post("/api/sessions/postgres/restore", tags=["guide"], response_model=None,
             responses={200: {"model": RestoreOut}, **error_responses(422)})
def restore_all(state: State, limit: Annotated[int | None, Query(ge=0, le=10_000)] = None) -> JSONBody:
    """``restore_all_sessions()``: load every active session (at most ``limit``) and report failures."""
    result = state.manager.restore_all_sessions(limit=limit)
    for error in result.get("errors", []):
        error["error"] = scrub(str(error.get("error", "")))
    return _json(result)


@router.post("/api/sessions/postgres/cleanup", tags=["guide"], response_model=None,
             responses={200: {"model": CleanupOut}, **error_responses(422)})
def cleanup(
    state: State,
    hard_delete: bool = False,
    inactive_for_hours: Annotated[float | None, Query(ge=0, le=MAX_EXPIRES_IN_HOURS)] = None,
) -> JSONBody:
    """Deactivate expired sessions (``hard_delete=true``: remove them, and with ``inactive_for_hours``
    also sessions inactive for that long)."""
    count = state.manager.cleanup_expired_sessions(hard_delete=hard_delete, inactive_for_hours=inactive_for_hours)
    return _json({"cleaned_count": count})


@router.get("/api/sessions/postgres/connection/test", tags=["guide"], response_model=None,
            responses={200: {"model": ConnectionTestOut}})
def connection_test(state: State) -> JSONBody:
    """``test_connection()``: ok, database, host, port, server version, latency, error."""
    result = state.manager.test_connection()
    if "error" in result:
        result["error"] = scrub(str(result["error"]))
    return _json(result)


@router.get("/api/sessions/restored", tags=["guide"], response_model=None,
            responses={200: {"model": RestoredOut}})
def restored(state: State) -> JSONBody:
    """What the last restore put in memory (at start-up, or by ``POST /api/sessions/restore``)."""
    return _json(state.restored)


@router.post("/api/sessions/restore", tags=["guide"], response_model=None,
             responses={200: {"model": RestoredOut}})
def restore_again(state: State) -> JSONBody:
    """Run the start-up restore again and return its counts."""
    return _json(state.restore("manual"))
