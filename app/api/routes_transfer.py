"""Export one session, fork one: ``GET /api/sessions/{id}/export``, ``POST /api/sessions/{id}/fork``."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.api.context import ApiState, api_state
from app.api.models import SESSION_ID_PATTERN, SessionIdPath, SessionInfoOut, check_nesting, error_responses
from app.api.responses import JSONBody
from app.api.security import require_token
from app.core.present import info_json
from app.core.transfer import export_one
from app.errors import SessionNotFound
from app.store.base import MAX_SESSION_ID_LENGTH

router = APIRouter(dependencies=[Depends(require_token)], tags=["transfer"], responses=error_responses(401, 503))
State = Annotated[ApiState, Depends(api_state)]

EXPORT_MEDIA_TYPE = "application/json"


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


class ForkIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    new_session_id: str | None = Field(None, min_length=1, max_length=MAX_SESSION_ID_LENGTH,
                                       pattern=SESSION_ID_PATTERN, description="Id of the copy (random by default)")
    # JSON has one number type: 3.0 is the integer 3 (and strings or booleans still are not).
    at_message: Annotated[int | None, BeforeValidator(_integral)] = Field(
        None, ge=0, le=2**31 - 1, description="Copy only the first N messages")
    metadata: dict[str, Any] | None = Field(None, description="The copy's metadata (default: the source's)")

    _shallow = field_validator("metadata")(check_nesting)


class ForkOut(SessionInfoOut):
    forked_from: str


@router.get("/api/sessions/{session_id:path}/export", response_model=None,
            responses={200: {"description": "The session as one line of `isotope sessions export` (a JSON object "
                                            "with format, format_version, session_id, version, timestamps, "
                                            "expiry, metadata, data and messages, in the store's encoding)",
                             "content": {EXPORT_MEDIA_TYPE: {"schema": {"type": "object"}}}},
                       **error_responses(404, 422)})
def export_session(session_id: SessionIdPath, state: State, include_inactive: bool = False) -> StreamingResponse:
    """One session in the export format, streamed (``include_inactive`` for a deleted or expired one)."""
    pieces = export_one(state.manager, session_id, include_inactive)  # SessionNotFound before any byte
    filename = quote(session_id, safe="") + ".jsonl"
    return StreamingResponse((piece.encode("utf-8") for piece in pieces), media_type=EXPORT_MEDIA_TYPE,
                             headers={"Content-Disposition": f"attachment; filename*=UTF-8''{filename}"})


@router.post("/api/sessions/{session_id:path}/fork", status_code=201, response_model=None,
             responses={201: {"model": ForkOut}, **error_responses(400, 404, 409, 413, 422)})
def fork_session(session_id: SessionIdPath, state: State,
                 body: Annotated[ForkIn | None, Body()] = None) -> JSONBody:
    """Copy the session (or its first ``at_message`` messages) to a new one; 201 with the copy."""
    body = body or ForkIn()
    new_id = state.manager.fork_session(session_id, body.new_session_id, body.at_message, body.metadata)
    info = state.manager.session_info(new_id)
    if info is None:  # expired in between (it had the source's expiry) or deleted meanwhile
        raise SessionNotFound(new_id, "was forked but is no longer active")
    return JSONBody({**info_json(info), "forked_from": session_id}, status_code=201,
                    headers={"Location": f"/api/sessions/postgres/sessions/{quote(new_id, safe='')}"})
