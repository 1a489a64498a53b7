"""The web console: its page at ``/`` (static files, no build step) and the reads it needs besides
the guide's and the chat API's routes.

The page and its scripts carry no data and need no token; every ``/api/console`` route needs the
bearer token like the rest of ``/api``. The browser keeps the key the user typed in its session
storage and sends it as ``Authorization: Bearer``; it never appears in a URL. The page's Content
Security Policy allows only its own scripts and styles, and the script renders every stored value
as text, never as HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from app.api.context import ApiState, api_state
from app.api.models import SessionIdPath, SessionInfoOut, StatisticsOut, error_responses
from app.api.responses import JSONBody
from app.api.security import require_token
from app.core import browse
from app.core.present import info_json, jsonable, session_json
from app.errors import SessionNotFound
from app.store.base import StoredSession

STATIC = Path(__file__).parent / "console"
ASSETS = {"console.js": "text/javascript", "api.js": "text/javascript", "dom.js": "text/javascript",
          "console.css": "text/css", "icon.svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}



class FoundSessionOut(SessionInfoOut):
    matched_messages: bool = Field(description="The message text matched the query (not only the id/name/user)")


class FoundSessionsOut(BaseModel):
    sessions: list[FoundSessionOut]
    limit: int
    offset: int
    has_more: bool = Field(description="Another page follows")
    total: int | None = Field(description="All sessions (with include_inactive, deleted ones too); null with a query")
    query: str
    messages_searched: bool = Field(description="False when only ids, names and user ids were searched "
                                                "(file store, PostgreSQL unreachable, or no word in the query)")


class ConsoleSessionOut(SessionInfoOut):
    messages: list[dict[str, Any]] | None
    tasks: Any
    files: Any
    state: dict[str, Any]
    complete: bool = Field(description="False: a deleted session from the file store, without its messages")


class StoreStatusOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    backend: str
    fallback_active: bool
    spool_depth: int


class TurnRateOut(BaseModel):
    total: int = Field(description="Turns this server process finished since it started")
    window_s: float
    in_window: int
    per_minute: float


class OverviewOut(BaseModel):
    statistics: StatisticsOut
    store: StoreStatusOut
    turns: TurnRateOut
    housekeeping: dict[str, Any] | None = Field(description="Deleted, expired and expiring sessions, sessions "
                                                            "created per day; null while PostgreSQL is unreachable")


class RestoredSessionOut(BaseModel):
    session_id: str
    restored: bool


page = APIRouter(include_in_schema=False)
router = APIRouter(prefix="/api/console", dependencies=[Depends(require_token)], tags=["console"],
                   responses=error_responses(401, 503))
State = Annotated[ApiState, Depends(api_state)]


def install(app: FastAPI) -> None:
    """Serve the console on ``app``: its page, its files and its API routes."""
    app.state.console_turn_rate = browse.TurnRate()
    app.include_router(page)
    app.include_router(router)


@page.get("/")
def index() -> FileResponse:
    """The console's single page."""
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@page.get("/console/auth.json")
def auth(state: State) -> JSONBody:
    """Whether the API needs a key, so the page asks for one before its first call (no data here)."""
    return JSONBody({"token_required": state.settings.api.token is not None}, headers={"Cache-Control": "no-store"})


@page.get("/console/{name}")
def asset(name: str) -> FileResponse:
    """The console's script, style sheet and icon (nothing else is served from its folder)."""
    if name not in ASSETS:
        raise HTTPException(404, f"the console has no file {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=SECURITY_HEADERS)


@router.get("/sessions", response_model=None, responses={200: {"model": FoundSessionsOut}, **error_responses(422)})
def find_sessions(
    state: State,
    q: Annotated[str, Query(max_length=500, description="Words of message text, or part of an id, name or user id")]
    = "",
    include_inactive: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JSONBody:
    """Sessions newest first, optionally matching ``q``; ``has_more`` tells whether a next page exists."""
    found = browse.find_sessions(state.manager, q, limit, offset, include_inactive)
    found["sessions"] = [jsonable(s) for s in found["sessions"]]
    return JSONBody(found)


@router.get("/overview", response_model=None, responses={200: {"model": OverviewOut}})
def overview(request: Request, state: State) -> JSONBody:
    """Statistics, store health (fallback, spool depth), growth, cleanup and the recent turn rate."""
    rate: browse.TurnRate = request.app.state.console_turn_rate
    return JSONBody(jsonable(browse.overview(state.manager, rate)))


@router.get("/sessions/{session_id:path}", response_model=None,
            responses={200: {"model": ConsoleSessionOut}, **error_responses(404, 422)})
def get_session(session_id: SessionIdPath, state: State) -> JSONBody:
    """One session, deleted or expired ones included (``is_active`` says which). From the file store a
    deleted session comes without its messages (``complete: false``)."""
    found = browse.any_session(state.manager, session_id)
    if found is None:
        raise SessionNotFound(session_id, "no session with this id")
    if isinstance(found, StoredSession):
        return JSONBody({**session_json(found), "complete": True})
    body: dict[str, Any] = {**info_json(found), "messages": None, "tasks": None, "files": None, "state": {},
                            "complete": False}
    return JSONBody(jsonable(body))


@router.post("/sessions/{session_id:path}/restore", response_model=None,
             responses={200: {"model": RestoredSessionOut}, **error_responses(404, 422)})
def restore_session(session_id: SessionIdPath, state: State) -> JSONBody:
    """Undo a soft delete (a past expiry is cleared too)."""
    if not browse.restore(state.manager, session_id):
        raise SessionNotFound(session_id, "no session with this id")
    return JSONBody({"session_id": session_id, "restored": True})
