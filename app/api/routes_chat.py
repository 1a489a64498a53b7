"""The chat API: create a session, send a message (JSON or Server-Sent Events), read, delete."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from app.api import sse
from app.api.context import ApiState, api_state
from app.api.models import (
    CreateSessionIn,
    DeletedOut,
    MessageIn,
    MessagesOut,
    SessionIdPath,
    SessionInfoOut,
    TurnOut,
    error_responses,
)
from app.api.responses import JSONBody
from app.api.security import require_token
from app.api.turn_streams import TurnStream
from app.core.present import info_json, jsonable
from app.errors import SessionNotFound

router = APIRouter(dependencies=[Depends(require_token)], tags=["chat"],
                   responses=error_responses(401, 503))
State = Annotated[ApiState, Depends(api_state)]


@router.post("/api/sessions", status_code=201, response_model=None,
             responses={201: {"model": SessionInfoOut}, **error_responses(400, 409, 413, 422)})
def create_session(body: CreateSessionIn, state: State) -> JSONBody:
    """Create a session (stored before this returns); 201 with its id, metadata and version."""
    session_id = state.engine.create_session(metadata=body.metadata, session_id=body.session_id,
                                             expires_in_hours=body.expires_in_hours)  # taken id: 409
    info = state.manager.session_info(session_id, include_inactive=True)
    if info is None:  # expired at once (expires_in_hours=0) or deleted meanwhile
        raise SessionNotFound(session_id, "was created but is no longer active")
    return JSONBody(info_json(info), status_code=201,
                        headers={"Location": f"/api/sessions/postgres/sessions/{quote(session_id, safe='')}"})


@router.post(
    "/api/sessions/{session_id:path}/messages", response_model=None,
    responses={200: {"model": TurnOut, "content": {sse.MEDIA_TYPE: {"schema": {"type": "string"}}},
                     "description": "The turn's result as JSON, or its events as Server-Sent Events "
                                    "when the request says Accept: text/event-stream"},
               **error_responses(400, 404, 409, 413, 422, 502)},
)
async def send_message(session_id: SessionIdPath, body: MessageIn, request: Request, state: State) -> Any:
    """One turn. ``Accept: text/event-stream`` streams the engine's events (token, tool_call,
    tool_result, message, then done or error); otherwise the reply comes as one JSON object."""
    assert state.turns is not None, "the lifespan starts the turn runner"
    turn = await state.turns.start(session_id, body.content)
    if sse.wanted(request.headers.get("accept", "")):
        return StreamingResponse(sse.stream(turn), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    return JSONBody(await _collect(turn))


async def _collect(turn: TurnStream) -> dict[str, Any]:
    kept: list[dict[str, Any]] = []
    async for batch in turn.batches():
        kept.extend(event for event in batch if event.get("type") != "token")
    if turn.failure is not None:
        raise turn.failure
    done = kept[-1]
    replies = [e["content"] for e in kept if e.get("type") == "message"]
    body: dict[str, Any] = jsonable({
        "session_id": done["session_id"], "version": done["version"], "message_count": done["message_count"],
        "response": replies[-1] if replies else "", "events": kept})
    return body


@router.get("/api/sessions/{session_id:path}/messages", response_model=None,
            responses={200: {"model": MessagesOut}, **error_responses(404, 422)})
def list_messages(
    session_id: SessionIdPath,
    state: State,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> JSONBody:
    """The session's messages, oldest first (``offset``/``limit`` to page)."""
    stored = state.manager.load(session_id)
    if stored is None:
        raise SessionNotFound(session_id)
    messages = stored.data.get("messages") or []
    if not isinstance(messages, list):
        messages = []
    window = messages[offset:] if limit is None else messages[offset:offset + limit]
    return JSONBody({
        "session_id": session_id, "version": stored.version, "message_count": len(messages), "offset": offset,
        "messages": [jsonable(m) for m in window],
    })


@router.delete("/api/sessions/{session_id:path}", response_model=None,
               responses={200: {"model": DeletedOut}, **error_responses(404, 422)})
def delete_session(session_id: SessionIdPath, state: State, hard: bool = False) -> JSONBody:
    """Soft delete (deactivate) by default; ``?hard=true`` removes the session and its messages."""
    found = state.manager.delete_session(session_id, soft_delete=not hard)
    if not found:
        raise SessionNotFound(session_id)
    return JSONBody({"session_id": session_id, "deleted": True, "hard": hard})
