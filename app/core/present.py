"""Sessions as plain JSON for people: the API's responses and ``isotope sessions show --json``.

Messages become ``{"type", "content", "tool_calls"?, "tool_call_id"?, "name"?, "id"?}``; other
values go through :func:`jsonable` (datetimes as ISO 8601, sets as lists, models as dicts...).
This is a presentation, not the storage format (see ``app.store.codec`` for that).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

from langchain_core.messages import BaseMessage
from pydantic import BaseModel

from app.store.base import SessionInfo, StoredSession


def message_json(message: BaseMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"type": message.type, "content": jsonable(message.content)}
    for key in ("id", "name", "tool_call_id", "status"):
        value = getattr(message, key, None)
        if value not in (None, "", "success"):
            out[key] = value
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        out["tool_calls"] = [{"id": c.get("id"), "name": c["name"], "args": jsonable(c["args"])} for c in tool_calls]
    return out


def jsonable(value: Any) -> Any:
    """A JSON-serialisable rendering of ``value`` (lossy for exotic types, never raises)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, BaseMessage):
        return message_json(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if value is ...:
        return "..."
    return repr(value)


def info_json(info: SessionInfo) -> dict[str, Any]:
    return {key: jsonable(value) for key, value in info.items()}


def session_json(stored: StoredSession) -> dict[str, Any]:
    """The whole session: messages, tasks, files, other members, metadata, version, timestamps."""
    data = dict(stored.data)
    messages = data.pop("messages", [])
    return {
        **info_json(stored.info()),
        "messages": [jsonable(m) for m in messages] if isinstance(messages, list) else jsonable(messages),
        "tasks": jsonable(data.pop("tasks", [])),
        "files": jsonable(data.pop("files", {})),
        "state": jsonable(data),
    }
