"""Session values <-> JSON that PostgreSQL's jsonb accepts, losslessly where Python allows.

Plain JSON (str, int, finite float, bool, None, lists, dicts with string keys) is stored as is, so
SQL users can query it. Everything else becomes a *tagged object*, a dict with the key ``"$iso"``:

=============  ==============================================  ==========================================
tag            Python value                                    stored as
=============  ==============================================  ==========================================
``msg``        a LangChain message (any kind, chunks too)      ``type``, ``content`` and non-default fields
``dt``         datetime (naive or aware)                       ISO 8601; aware keeps its offset
``date``       date                                            ISO 8601
``time``       time                                            ISO 8601
``td``         timedelta                                       ``[days, seconds, microseconds]``
``dec``        Decimal                                         its string
``uuid``       UUID                                            its string
``set``        set / ``fset`` frozenset                        a list of encoded elements
``tuple``      tuple                                           a list of encoded elements
``bytes``      bytes (``bytearray``: tag ``bytearray``)           base64
``float``      nan, ±inf, and floats jsonb would turn into     ``repr(value)``
               ints (``1e+16``)
``str``        a string with NUL or a lone surrogate           base64 of UTF-8 with ``surrogatepass``
               (jsonb refuses both)
``map``        a dict with a non-string key, a key jsonb       a list of ``[key, value]`` pairs
               refuses, or the key ``"$iso"`` itself
``model``      a pydantic model                                class path and ``model_dump()``
``dc``         a dataclass instance                            class path and its fields
``enum``       an Enum member                                  class path and value
``path``       a ``pathlib`` path                              its string
``complex``    complex                                         ``[real, imag]``
``ellipsis``   ``...``                                         nothing
=============  ==============================================  ==========================================

So NUL characters and lone surrogates come back exactly. Anything else (locks, sockets, open files,
a LangGraph ``InMemoryStore``, arbitrary objects) is *skipped*: left out of its dict or list, and
reported by path (``session_data.metadata.store``) so the caller can log one warning.

Decoding never imports or calls a name taken from the stored data: whoever can write a row, a
session file or a spool record must not be able to run code as the server. The class named by a
``model``, ``dc``, ``enum`` or ``msg`` tag is looked up in a registry: LangChain's message classes
are built in, and applications add their own with :func:`register`. A class that is not registered
comes back as plain data (its value or fields) with one warning naming it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import functools
import json
import logging
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
from pydantic import BaseModel

from app.errors import IsotopeError

TAG = "$iso"
_JSON_SCALARS = (int, bool, type(None))
log = logging.getLogger("isotope.codec")


class CodecError(IsotopeError):
    """A stored value could not be decoded (corrupt or written by an incompatible version)."""


class Encoded:
    """The result of encoding: the JSON-ready value, its text, and what had to be skipped."""

    __slots__ = ("value", "skipped", "dropped")

    def __init__(self, value: Any, skipped: list[str], dropped: bool = False) -> None:
        self.value = value
        self.skipped = skipped
        self.dropped = dropped  # the value itself was skipped (``value`` is then None)


# ---------------------------------------------------------------------------------------------
# LangChain messages


def _message_classes() -> dict[str, type[BaseMessage]]:
    classes = (
        HumanMessage, AIMessage, SystemMessage, ToolMessage, FunctionMessage, ChatMessage, RemoveMessage,
        HumanMessageChunk, AIMessageChunk, SystemMessageChunk, ToolMessageChunk, FunctionMessageChunk,
        ChatMessageChunk,
    )
    return {cls.model_fields["type"].default: cls for cls in classes}


_MESSAGE_CLASSES = _message_classes()

# ---------------------------------------------------------------------------------------------
# The registry of classes a stored value may name


_REGISTRY: dict[str, type] = {}
_WARNED: set[str] = set()
_MAX_WARNED = 1000  # hostile data could name endless classes; the set must not grow with it


def register(cls: type) -> type:
    """Let stored values of ``cls`` (an Enum, a pydantic model or a dataclass) load as ``cls``.

    Call it at import time of the module that defines the class, before sessions are loaded
    (``@register`` works as a class decorator). Values of a class that is not registered are
    still saved, and load as plain data (an enum's value, a model's or dataclass's fields).
    """
    if not isinstance(cls, type) or not (
            issubclass(cls, (enum.Enum, BaseModel)) or dataclasses.is_dataclass(cls)):
        raise TypeError(f"codec.register() takes an Enum, pydantic model or dataclass class, not {cls!r}")
    _REGISTRY[_class_path(cls)] = cls
    return cls


def _registered(path: Any, kind: type | None) -> Any:
    """The registered class stored as ``path`` if it is a ``kind``; else None and one warning."""
    cls = _REGISTRY.get(path) if type(path) is str else None
    if cls is not None and (kind is None or issubclass(cls, kind)):
        return cls
    _warn_once(path, "a stored value names type %s, which is not registered: it loads as plain data "
                     "(call app.store.codec.register(cls) at start-up to load it as its class)")
    return None


def _check_registered(cls: type) -> str:
    """The stored name of ``cls``; warns once when it would not load back as itself."""
    path = _class_path(cls)
    if _REGISTRY.get(path) is not cls:
        _warn_once(path, "values of type %s are saved but will load as plain data: register the class "
                         "with app.store.codec.register(cls) to load them as themselves")
    return path


def _warn_once(path: Any, message: str) -> None:
    key = repr(path)[:200]  # repr: a name from data cannot forge log lines
    if key not in _WARNED and len(_WARNED) < _MAX_WARNED:
        _WARNED.add(key)
        log.warning(message, key)


_DEFAULTS: dict[type, dict[str, Any]] = {}


def _field_defaults(cls: type[BaseModel]) -> dict[str, Any]:
    """Per-class default of every field, so a stored message holds only what differs."""
    found = _DEFAULTS.get(cls)
    if found is None:
        found = {}
        for name, field in cls.model_fields.items():
            if field.default_factory is not None:
                found[name] = field.default_factory()  # type: ignore[call-arg]
            elif not field.is_required():
                found[name] = field.default
        _DEFAULTS[cls] = found
    return found


_ABSENT = object()


def _encode_message(msg: BaseMessage, enc: _Encoder, path: Any) -> dict[str, Any]:
    cls = type(msg)
    defaults = _field_defaults(cls)
    out: dict[str, Any] = {TAG: "msg", "type": msg.type}
    if _MESSAGE_CLASSES.get(msg.type) is not cls:
        out["cls"] = _check_registered(cls)
    for key, value in msg.__dict__.items():
        if key == "type":
            continue
        kind = type(value)
        if key != "content":
            default = defaults.get(key, _ABSENT)
            if default is not _ABSENT and kind is type(default) and value == default:
                continue
        if kind is str and not _bad_string(value):
            out[key] = value  # the common case, without a call and a path per field
        else:
            out[key] = enc.encode(value, (path, key))
    extra = msg.__pydantic_extra__
    if extra:
        out["extra"] = enc.encode(dict(extra), (path, "extra"))
    return out


def _decode_message(obj: dict[str, Any]) -> BaseMessage:
    """A stored message back as its LangChain class (``obj`` is a freshly parsed dict we own)."""
    del obj[TAG]
    cls_path = obj.pop("cls", None)
    extra = obj.pop("extra", None)
    cls: type[BaseMessage] | None = _MESSAGE_CLASSES.get(obj.get("type"))  # type: ignore[arg-type]
    if cls_path:
        # A message subclass: only a registered one; else the built-in class of its type.
        cls = _registered(cls_path, BaseMessage) or cls
        cls_path = cls_path if cls is _REGISTRY.get(cls_path) else None
    if cls is None:
        raise CodecError(f"unknown message type {obj.get('type')!r}")
    if "content" not in obj:
        raise CodecError("stored message has no content")
    if not cls_path and (extra is None or type(extra) is dict):
        built = _prevalidated(cls, obj, extra)
        if built is not None:
            return built
    if extra:
        obj.update(extra)
    try:
        return cls(**obj)
    except Exception as exc:  # pydantic ValidationError and friends
        raise CodecError(f"stored {obj.get('type')!r} message is invalid: {exc}") from exc


class _Spec:
    """What rebuilding one message class without validation needs, computed once."""

    __slots__ = ("template", "containers", "allowed", "required")

    def __init__(self, cls: type[BaseMessage]) -> None:
        defaults = _field_defaults(cls)
        self.template = {name: defaults.get(name) for name in cls.model_fields}
        self.containers = [(n, type(d)) for n, d in defaults.items() if type(d) is dict or type(d) is list]
        self.allowed = frozenset(cls.model_fields)
        self.required = frozenset(n for n in cls.model_fields if n not in defaults)


_SPECS: dict[type, _Spec] = {}
_set = object.__setattr__


def _prevalidated(cls: type[BaseMessage], fields: dict[str, Any], extra: dict[str, Any] | None) -> BaseMessage | None:
    """Rebuild a message the encoder wrote from a validated one, without validating it again.

    pydantic validation is ~3 µs a message, most of a 1,000-message load. What we stored came
    from a validated object and holds only known fields, so we set them as ``model_construct``
    does (which is slower still here). Anything unexpected (an unknown field, a missing required
    one, content that is neither text nor a list) goes through full validation instead, so a
    corrupt row still fails loudly.
    """
    spec = _SPECS.get(cls)
    if spec is None:
        spec = _SPECS[cls] = _Spec(cls)
    content = fields["content"]
    if (type(content) is not str and type(content) is not list) or not (
            fields.keys() <= spec.allowed and spec.required <= fields.keys()):
        return None
    values = spec.template.copy()
    for name, kind in spec.containers:
        values[name] = kind()
    values.update(fields)
    message = cls.__new__(cls)
    _set(message, "__dict__", values)
    _set(message, "__pydantic_fields_set__", set(fields))
    _set(message, "__pydantic_extra__", extra if extra else {})
    _set(message, "__pydantic_private__", None)
    return message


# ---------------------------------------------------------------------------------------------
# Encoding


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _bad_string(s: str) -> bool:
    """True when jsonb would refuse the string: a NUL, or a lone surrogate (not valid UTF-8)."""
    if "\x00" in s:
        return True
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _str_tag(s: str) -> dict[str, Any]:
    raw = s.encode("utf-8", "surrogatepass")
    return {TAG: "str", "v": base64.b64encode(raw).decode("ascii")}


def _float(value: float) -> Any:
    if math.isfinite(value):
        text = repr(value)
        # jsonb stores numbers as numeric and prints 1e+16 as 10000000000000000, which
        # json.loads reads back as an int; keep such floats as text.
        if "e" not in text and "E" not in text:
            return value
        return {TAG: "float", "v": text}
    return {TAG: "float", "v": repr(value)}


def format_path(path: Any) -> str:
    """``(((None, 'session_data'), 'files'), 3)`` -> ``session_data.files[3]``."""
    parts: list[Any] = []
    while path is not None:
        path, key = path
        parts.append(key)
    text = ""
    for key in reversed(parts):
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


class _Encoder:
    """One encoding pass; collects the paths of skipped values."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def encode(self, value: Any, path: Any) -> Any:
        kind = type(value)
        if kind is str:
            return _str_tag(value) if _bad_string(value) else value
        if kind in _JSON_SCALARS:
            return value
        if kind is float:
            return _float(value)
        if kind is list:
            return self._sequence(value, path)
        if kind is dict:
            return self._dict(value, path)
        if isinstance(value, BaseMessage):
            return _encode_message(value, self, path)
        handler = _handler_for(kind)
        if handler is None:
            self.skipped.append(f"{format_path(path)} ({kind.__module__}.{kind.__qualname__})")
            return _SKIP
        return handler(self, value, path)

    def _sequence(self, items: Any, path: Any) -> list[Any]:
        out = []
        for index, item in enumerate(items):
            encoded = self.encode(item, (path, index))
            if encoded is not _SKIP:
                out.append(encoded)
        return out

    def _dict(self, value: dict[Any, Any], path: Any) -> Any:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str or key == TAG or _bad_string(key):
                return self._map(value, path)
            encoded = self.encode(item, (path, key))
            if encoded is not _SKIP:
                out[key] = encoded
        return out

    def _map(self, value: dict[Any, Any], path: Any) -> dict[str, Any]:
        pairs = []
        for key, item in value.items():
            k = self.encode(key, (path, f"<key {key!r}>"))
            v = self.encode(item, (path, repr(key)))
            if k is not _SKIP and v is not _SKIP:
                pairs.append([k, v])
        return {TAG: "map", "v": pairs}


_SKIP = object()


def _tagged(tag: str, convert: Callable[[Any], Any]) -> Callable[[_Encoder, Any, Any], Any]:
    return lambda enc, value, path: {TAG: tag, "v": convert(value)}


def _encode_model(enc: _Encoder, value: BaseModel, path: Any) -> Any:
    try:
        dumped = value.model_dump(mode="python")
    except Exception:
        enc.skipped.append(f"{format_path(path)} ({_class_path(type(value))}: model_dump failed)")
        return _SKIP
    return {TAG: "model", "cls": _check_registered(type(value)), "v": enc.encode(dumped, path)}


def _encode_dataclass(enc: _Encoder, value: Any, path: Any) -> Any:
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return {TAG: "dc", "cls": _check_registered(type(value)), "v": enc._dict(fields, path)}


def _encode_enum(enc: _Encoder, value: enum.Enum, path: Any) -> Any:
    return {TAG: "enum", "cls": _check_registered(type(value)), "v": enc.encode(value.value, path)}


_HANDLERS: dict[type, Callable[[_Encoder, Any, Any], Any]] = {
    tuple: lambda enc, v, p: {TAG: "tuple", "v": enc._sequence(v, p)},
    set: lambda enc, v, p: {TAG: "set", "v": enc._sequence(v, p)},
    frozenset: lambda enc, v, p: {TAG: "fset", "v": enc._sequence(v, p)},
    dt.datetime: _tagged("dt", dt.datetime.isoformat),
    dt.date: _tagged("date", dt.date.isoformat),
    dt.time: _tagged("time", dt.time.isoformat),
    dt.timedelta: _tagged("td", lambda v: [v.days, v.seconds, v.microseconds]),
    Decimal: _tagged("dec", str),
    uuid.UUID: _tagged("uuid", str),
    bytes: _tagged("bytes", lambda v: base64.b64encode(v).decode("ascii")),
    bytearray: _tagged("bytearray", lambda v: base64.b64encode(v).decode("ascii")),
    complex: _tagged("complex", lambda v: [_float(v.real), _float(v.imag)]),
    type(Ellipsis): lambda enc, v, p: {TAG: "ellipsis"},
}


def _handler_for(kind: type) -> Callable[[_Encoder, Any, Any], Any] | None:
    handler = _HANDLERS.get(kind)
    if handler is not None:
        return handler
    if issubclass(kind, BaseModel):
        return _encode_model
    if dataclasses.is_dataclass(kind):
        return _encode_dataclass
    if issubclass(kind, enum.Enum):
        return _encode_enum
    if issubclass(kind, PurePath):
        return _tagged("path", str)
    for base, handler in _HANDLERS.items():  # subclasses of str/int/dict... land here rarely
        if issubclass(kind, base):
            return handler
    for base in (str, bool, int, float, list, dict):
        if issubclass(kind, base):
            return functools.partial(_as_plain, base)
    return None


def _as_plain(plain: type, enc: _Encoder, value: Any, path: Any) -> Any:
    """Subclasses of str, int, list, dict...: stored as their plain base type."""
    return enc.encode(plain(value), path)


def encode(value: Any, root: str) -> Encoded:
    """Encode ``value``; ``root`` names it in skip reports (``session_data.tasks``)."""
    return encode_at(value, (None, root))


def encode_at(value: Any, path: Any) -> Encoded:
    """Encode ``value`` found at ``path`` (a :func:`format_path` chain, formatted only if needed)."""
    enc = _Encoder()
    out = enc.encode(value, path)
    return Encoded(None if out is _SKIP else out, enc.skipped, out is _SKIP)


# json.dumps with non-default options builds a new encoder per call; reuse one.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> str:
    """Compact JSON text of an already-encoded value."""
    return _dumps(value)


# ---------------------------------------------------------------------------------------------
# Decoding


def _decode_tag(obj: dict[str, Any]) -> Any:
    tag = obj[TAG]
    try:
        decoder = _DECODERS[tag]
    except (KeyError, TypeError):
        raise CodecError(f"unknown tag {tag!r}") from None
    try:
        return decoder(obj)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"malformed {tag!r} value: {exc}") from exc


def _decode_class_value(obj: dict[str, Any], kind: type | None, build: Callable[[Any, Any], Any]) -> Any:
    cls = _registered(obj.get("cls"), kind)
    if cls is None or (kind is None and not dataclasses.is_dataclass(cls)):
        return obj["v"]
    try:
        return build(cls, obj["v"])
    except Exception:
        _warn_once(obj.get("cls"), "a stored value of type %s no longer fits its class: it loads as plain data")
        return obj["v"]


def _build_dataclass(cls: Any, fields: dict[str, Any]) -> Any:
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    instance = cls(**{k: v for k, v in fields.items() if k in init})
    for key, value in fields.items():
        if key not in init:
            object.__setattr__(instance, key, value)
    return instance


def _str_from_tag(obj: dict[str, Any]) -> str:
    return base64.b64decode(obj["v"]).decode("utf-8", "surrogatepass")


for _cls in _MESSAGE_CLASSES.values():
    register(_cls)

_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "msg": _decode_message,
    "dt": lambda o: dt.datetime.fromisoformat(o["v"]),
    "date": lambda o: dt.date.fromisoformat(o["v"]),
    "time": lambda o: dt.time.fromisoformat(o["v"]),
    "td": lambda o: dt.timedelta(days=o["v"][0], seconds=o["v"][1], microseconds=o["v"][2]),
    "dec": lambda o: Decimal(o["v"]),
    "uuid": lambda o: uuid.UUID(o["v"]),
    "set": lambda o: set(o["v"]),
    "fset": lambda o: frozenset(o["v"]),
    "tuple": lambda o: tuple(o["v"]),
    "bytes": lambda o: base64.b64decode(o["v"]),
    "bytearray": lambda o: bytearray(base64.b64decode(o["v"])),
    "float": lambda o: float(o["v"]),
    "complex": lambda o: complex(float(o["v"][0]), float(o["v"][1])),
    "str": _str_from_tag,
    "map": lambda o: {k: v for k, v in o["v"]},
    "model": lambda o: _decode_class_value(o, BaseModel, lambda cls, v: cls.model_validate(v)),
    "dc": lambda o: _decode_class_value(o, None, _build_dataclass),
    "enum": lambda o: _decode_class_value(o, enum.Enum, lambda cls, v: cls(v)),
    "path": lambda o: Path(o["v"]),
    "ellipsis": lambda o: ...,
    # Markers the store writes into session_data; decoded by the store, not here.
    "messages": lambda o: o,
    "member": lambda o: o,
}


def _hook(obj: dict[str, Any]) -> Any:
    return _decode_tag(obj) if TAG in obj else obj


_tagged_decoder = json.JSONDecoder(object_hook=_hook)  # json.loads(object_hook=...) builds one per call
_plain_decoder = json.JSONDecoder()


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """Decode JSON text written by :func:`dumps` of an encoded value. Raises :class:`CodecError`."""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    try:
        # Text without a tag is plain JSON: skip the per-dict hook.
        return (_tagged_decoder if TAG in text else _plain_decoder).decode(text)
    except CodecError:
        raise
    except (ValueError, TypeError) as exc:
        raise CodecError(f"not valid JSON: {exc}") from exc


def decode(value: Any) -> Any:
    """Decode an already-parsed JSON value (for values that did not come through :func:`loads`)."""
    return loads(json.dumps(value))
