"""The export file format: one session per JSON line, read back with every value checked.

A line is one JSON object::

    {"format": "isotope.session", "format_version": 1, "session_id": "...", "version": 3,
     "created_at": "2026-12-01T21:43:41.123456+00:00", "last_updated": "...", "expires_at": null,
     "is_active": true, "metadata": {...}, "data": {...}, "messages": [...]}

``data`` is the session's state except its message list, ``messages`` the list (absent when the
session has none), both in the store's codec encoding (``app.store.codec``: plain JSON as is,
other values as ``{"$iso": ...}`` tagged objects), so every value the store keeps comes back
exactly. ``messages`` is last so that a writer can stream it. A reader also accepts the message
list inside ``data`` (as the former file store kept it), and needs only ``format``,
``format_version``, ``session_id`` and ``data``: the rest default to version 1, now, no expiry,
active, no metadata.

:func:`parse_line` turns a line into the rows an import writes, or raises :class:`BadRecord`
saying which field is wrong and why (``messages[3]: unknown message type 'robot'``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from app.errors import InvalidInput
from app.store import codec
from app.store.base import check_session_data, check_session_id
from app.store.delta import MESSAGES, Limits, plan_save
from app.store.transfer import FORMAT, FORMAT_VERSION, SessionRows

KNOWN_KEYS = frozenset({"format", "format_version", "session_id", "version", "created_at", "last_updated",
                        "expires_at", "is_active", "metadata", "data", MESSAGES})


class BadRecord(ValueError):
    """A line (or a file-store file) that cannot be imported; the message says what is wrong."""


def parse_line(text: str | bytes, limits: Limits) -> SessionRows:
    """The rows of one exported line. Raises :class:`BadRecord`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord(f"not UTF-8 (byte {exc.start})") from None
    try:
        record = codec.loads(text)
    except codec.CodecError as exc:
        raise BadRecord(_explain(text, exc)) from None
    return rows_from_record(record, limits)


def rows_from_record(record: Any, limits: Limits) -> SessionRows:
    """Check a decoded record field by field and plan its rows as a save would store them."""
    if not isinstance(record, dict):
        raise BadRecord(f"is a JSON {_kind(record)}, not an object")
    _check_format(record)
    unknown = sorted(str(k) for k in record if k not in KNOWN_KEYS)
    if unknown:
        raise BadRecord(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(KNOWN_KEYS))})")
    try:
        session_id = check_session_id(_required(record, "session_id"))
    except InvalidInput as exc:
        raise BadRecord(str(exc)) from None
    now = datetime.now(UTC)
    version = record.get("version", 1)
    if type(version) is not int or not 1 <= version <= 2**31 - 1:
        raise BadRecord(f"version: must be a whole number from 1 to {2**31 - 1}, not {version!r}")
    is_active = record.get("is_active", True)
    if type(is_active) is not bool:
        raise BadRecord(f"is_active: must be true or false, not {is_active!r}")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BadRecord(f"metadata: must be an object, not a {_kind(metadata)}")
    data = _state(record)
    try:
        check_session_data(data)
        plan = plan_save(session_id, data, metadata, None, None, limits)
    except InvalidInput as exc:
        raise BadRecord(str(exc)) from None
    if plan.skipped:
        raise BadRecord(f"holds values that cannot be stored: {', '.join(plan.skipped[:5])}")
    return SessionRows(
        session_id=session_id, version=version,
        created_at=_timestamp(record, "created_at") or now, last_updated=_timestamp(record, "last_updated") or now,
        expires_at=_timestamp(record, "expires_at"), is_active=is_active,
        session_data=plan.session_data_text, metadata=plan.metadata_text or "{}",
        messages=plan.all_texts or [], members=plan.upsert_members,
    )


def _check_format(record: dict[str, Any]) -> None:
    found = _required(record, "format")
    if found != FORMAT:
        raise BadRecord(f"format: {found!r} is not {FORMAT!r} (not an Isotope session export)")
    version = _required(record, "format_version")
    if type(version) is not int or version < 1:
        raise BadRecord(f"format_version: must be a whole number from 1, not {version!r}")
    if version > FORMAT_VERSION:
        raise BadRecord(f"format_version {version} is newer than this Isotope reads ({FORMAT_VERSION}); "
                        "upgrade Isotope to import it")


def _required(record: dict[str, Any], key: str) -> Any:
    if key not in record:
        raise BadRecord(f"{key}: missing")
    return record[key]


def _state(record: dict[str, Any]) -> dict[str, Any]:
    data = _required(record, "data")
    if not isinstance(data, dict):
        raise BadRecord(f"data: must be an object, not a {_kind(data)}")
    data = dict(data)
    marker = data.get(MESSAGES)
    if isinstance(marker, dict) and marker.get(codec.TAG) == "messages":
        del data[MESSAGES]  # the store's own marker (a file-store file of a session without messages)
    if MESSAGES in record:
        messages = record[MESSAGES]
        if not isinstance(messages, list):
            raise BadRecord(f"messages: must be a list, not a {_kind(messages)}")
        if MESSAGES in data:
            raise BadRecord("messages: given twice, at the top and inside data")
        data[MESSAGES] = messages
    return data


def _timestamp(record: dict[str, Any], key: str) -> datetime | None:
    """The timestamp at ``key``; None when absent (or null, for expires_at only)."""
    value = record.get(key)
    if value is None:
        if key != "expires_at" and key in record:
            raise BadRecord(f"{key}: must be a timestamp, not null")
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{key}: must be an ISO 8601 timestamp string, not a {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRecord(f"{key}: {value[:40]!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise BadRecord(f"{key}: {value[:40]!r} has no UTC offset (write it like 2026-01-31T12:00:00+00:00)")
    return parsed


def _explain(text: str, exc: codec.CodecError) -> str:
    """Where a line that failed to decode went wrong: its JSON, or the first bad tagged value."""
    try:
        plain = json.loads(text)
    except json.JSONDecodeError as err:
        return f"not valid JSON at column {err.colno}: {err.msg}"
    except (ValueError, RecursionError) as err:
        return f"not valid JSON: {err}"
    where = _locate(plain, "") if isinstance(plain, dict) else None
    return f"{where}: {exc}" if where else str(exc)


def _locate(value: Any, path: str) -> str | None:
    """The path of the innermost value under ``value`` that does not decode, or None."""
    try:
        codec.decode(value)
        return None
    except (codec.CodecError, RecursionError):
        pass
    if isinstance(value, dict) and codec.TAG not in value:
        children: Any = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        return path or "value"
    for key, child in children:
        where = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        found = _locate(child, where)
        if found:
            return found
    return path or "value"


def _kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
