"""Request bodies and documented responses (the OpenAPI schema at ``/openapi.json``).

Routes answer with plain JSON built by :mod:`app.core.present`; the response models here document
that JSON (and let schemathesis check it), they are not re-validated on every response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.store.base import MAX_EXPIRES_IN_HOURS, MAX_SESSION_ID_LENGTH

# The manager's rules for ids (app.store.base.check_session_id) that a schema can state.
SESSION_ID_PATTERN = r"^[^\x00]*$"
SessionIdPath = Annotated[str, Path(min_length=1, max_length=MAX_SESSION_ID_LENGTH, pattern=SESSION_ID_PATTERN,
                                    description="Any id the manager accepts; '/' allowed (percent-encode it)")]


# Deeper request values are refused (422): the store's encoder and the JSON rendering recurse.
MAX_NESTING = 64


def check_nesting(value: Any, limit: int = MAX_NESTING) -> Any:
    """``value`` unchanged, or ValueError when lists/dicts nest deeper than ``limit`` levels."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    raise ValueError(f"values nest deeper than {limit} levels")
                stack.append((child, depth + 1))
    return value


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors ------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. session_not_found")
    message: str = Field(description="What happened and what to do next")
    field: str | None = Field(None, description="The rejected input (422 only)")


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry documenting these error statuses with :class:`ErrorBody`."""
    text = {
        400: "The request body cannot be decoded",
        401: "Missing or wrong bearer token",
        404: "Unknown, deleted or expired session",
        409: "The session exists already, or is busy in another turn",
        413: "Request body over api.max_request_bytes",
        422: "Invalid input (names the field)",
        502: "The model or a tool failed; nothing was saved",
        503: "No store can take the request, or the server is starting or stopping",
    }
    return {status: {"model": ErrorBody, "description": text.get(status, "Error")} for status in statuses}


# -- sessions ----------------------------------------------------------------------------------


class SessionInfoOut(_Open):
    session_id: str
    metadata: dict[str, Any]
    created_at: datetime
    last_updated: datetime
    expires_at: datetime | None
    version: int
    is_active: bool
    message_count: int


class SessionListOut(BaseModel):
    sessions: list[SessionInfoOut]
    limit: int
    offset: int
    total: int


class MessageOut(_Open):
    type: str = Field(description="human, ai, tool or system")
    content: Any
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class SessionOut(SessionInfoOut):
    messages: list[MessageOut]
    tasks: Any
    files: Any
    state: dict[str, Any] = Field(description="Other members of the session's data")


class MessagesOut(BaseModel):
    session_id: str
    version: int
    message_count: int
    offset: int
    messages: list[MessageOut]


class CreateSessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no true-as-1, no "2" as a number

    metadata: dict[str, Any] = Field(default_factory=dict, description='e.g. {"name": "新会话", "user_id": "user123"}')
    session_id: str | None = Field(None, min_length=1, max_length=MAX_SESSION_ID_LENGTH, pattern=SESSION_ID_PATTERN,
                                   description="Your own id; a random one by default (409 if it exists)")
    expires_in_hours: float | None = Field(None, ge=0, le=MAX_EXPIRES_IN_HOURS)

    _shallow = field_validator("metadata")(check_nesting)


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no true-as-1, no "2" as a number

    content: str = Field(min_length=1, pattern=r"\S", description="The user's message (not only whitespace)")


class TurnOut(_Open):
    session_id: str
    version: int
    message_count: int
    response: str = Field(description="The last assistant reply of the turn")
    events: list[dict[str, Any]] = Field(description="The turn's events except tokens")


class DeletedOut(BaseModel):
    session_id: str
    deleted: bool
    hard: bool


# -- the guide's management endpoints ----------------------------------------------------------


class StatisticsOut(_Open):
    total_sessions: int
    active_sessions: int
    avg_messages_per_session: float


class RestoreOut(_Open):
    restored_count: int
    failed_count: int
    failed_session_ids: list[str]


class RestoredOut(RestoreOut):
    session_ids: list[str] = Field(description="The sessions held in memory by that restore, newest first")
    restored_at: datetime | None
    trigger: str = Field(description="startup or manual")


class CleanupOut(BaseModel):
    cleaned_count: int


class ConnectionTestOut(_Open):
    ok: bool


# -- operations --------------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: str


class ReadyOut(_Open):
    ready: bool
    store: str = Field(description="postgres, fallback (PostgreSQL unreachable, writes spooled) or files")
    fallback_active: bool
    spool_depth: int
    reason: str | None = Field(None, description="Why not ready, or why the fallback is active")
    error: ErrorDetail | None = Field(None, description="With 503: the standard error member")
