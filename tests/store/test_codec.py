"""Serialisation: what goes in comes back (or is skipped and reported)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    ToolMessageChunk,
)
from pydantic import BaseModel

from app.store import codec


@codec.register
class Point(BaseModel):
    x: int
    when: dt.datetime


@codec.register
@dataclasses.dataclass
class Box:
    label: str
    items: list[int]
    created: dt.date = dataclasses.field(default_factory=dt.date.today)


@codec.register
class Colour(enum.Enum):
    RED = "red"


def roundtrip(value):
    encoded = codec.encode(value, "v")
    return codec.loads(codec.dumps(encoded.value)), encoded.skipped


MESSAGES = [
    HumanMessage("hi", id="h1", name="bob", additional_kwargs={"k": [1, 2]}),
    HumanMessage(content=[{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]),
    AIMessage("", tool_calls=[{"name": "add_task", "args": {"title": "x", "n": 1.5}, "id": "c1"}],
              usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
              response_metadata={"model": "m", "at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}),
    AIMessage("bad call", invalid_tool_calls=[{"name": "f", "args": "{oops", "id": "c2", "error": "bad json"}]),
    AIMessageChunk(content="par", id="k", tool_call_chunks=[{"name": "f", "args": '{"a": 1}', "id": "c3", "index": 0}]),
    ToolMessage("result", tool_call_id="c1", artifact={"raw": [1, 2]}, status="error"),
    ToolMessageChunk(content="r", tool_call_id="c1"),
    SystemMessage("be brief"),
    ChatMessage(content="hello", role="critic"),
    FunctionMessage(content="42", name="answer"),
    HumanMessageChunk(content="chunk"),
    RemoveMessage(id="h1"),
    HumanMessage("extra field", custom_field={"deep": True}),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_kind_comes_back_equal(message):
    back, skipped = roundtrip(message)
    assert type(back) is type(message) and back == message and skipped == []


def test_datetimes_keep_instant_or_wall_clock():
    aware = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    naive = dt.datetime(2024, 5, 1, 12, 30, 15, 123456)
    (back_aware, back_naive), _ = roundtrip([aware, naive])
    assert back_aware == aware and back_aware.utcoffset() == dt.timedelta(hours=8)
    assert back_naive == naive and back_naive.tzinfo is None


@pytest.mark.parametrize("value", [
    Decimal("1.10"), uuid.uuid4(), {1, 2, 3}, frozenset({"a"}), (1, "two", None), b"\x00\xffbytes",
    bytearray(b"ba"), dt.date(2020, 2, 29), dt.time(23, 59), dt.timedelta(days=2, microseconds=5),
    Point(x=1, when=dt.datetime(2020, 1, 1)), Box("b", [1, 2]), Colour.RED, Path("/tmp/x"), 3 + 4j, ...,
    {1: "int key", (1, 2): "tuple key", "$iso": "reserved key"}, "nul\x00inside", "lone \ud800 surrogate",
    1e16, 1e300, -0.0, 2**80, float("inf"), float("-inf"),
], ids=repr)
def test_non_json_values_come_back_as_themselves(value):
    back, skipped = roundtrip({"v": value})
    assert skipped == []
    assert back["v"] == value and type(back["v"]) is type(value)


def test_nan_comes_back_as_nan():
    back, _ = roundtrip(float("nan"))
    assert math.isnan(back)


def test_unserialisable_values_are_skipped_and_reported_by_path():
    lock = threading.Lock()
    value = {"keep": 1, "lock": lock, "deep": [{"a": 1}, {"b": [lock, 2]}], "obj": object()}
    back, skipped = roundtrip(value)
    assert back == {"keep": 1, "deep": [{"a": 1}, {"b": [2]}]}
    assert skipped == ["v.lock (_thread.lock)", "v.deep[1].b[0] (_thread.lock)", "v.obj (builtins.object)"]


def test_the_guides_placeholders_round_trip():
    value = {"messages": [...], "metadata": {...}, "files": {}, "tasks": []}
    back, skipped = roundtrip(value)
    assert back == value and skipped == []


def test_corrupt_values_raise_codec_error():
    for text in ('{"$iso": "nope"}', '{"$iso": "dt", "v": "not a date"}', '{"$iso": "msg", "type": "human"}',
                 "{not json"):
        with pytest.raises(codec.CodecError):
            codec.loads(text)


def test_stored_messages_are_compact():
    text = codec.dumps(codec.encode(HumanMessage("hello"), "m").value)
    assert text == '{"$iso":"msg","type":"human","content":"hello"}'


json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)), st.binary(max_size=20), st.decimals(allow_nan=False),
)
values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    | st.tuples(children, children),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_property_roundtrip(value):
    back, skipped = roundtrip(value)
    assert skipped == []
    assert back == value or (isinstance(value, Decimal) and value.is_nan())
