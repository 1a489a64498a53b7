"""Hostile values for property tests, and the rules that say which of them must be refused.

Strings carry NUL, lone surrogates, right-to-left marks and astral characters; numbers are nan,
±inf, -0.0, 1e300, 5e-324 and integers of hundreds of digits; dict keys are ints, bools, None,
tuples, floats, ``"$iso"`` (the codec's own tag) and empty strings. :func:`same` is equality as
the codec documents it (nan equals nan; a float -0.0 may come back as 0.0).
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from app.store.base import MAX_EXPIRES_IN_HOURS, MAX_SESSION_ID_LENGTH

ANY_CHAR = st.characters(exclude_categories=())  # every code point, lone surrogates included
NASTY = ["\x00", "\ud800", "\udfff", "a\x00b", "\ud83d", "$iso", "$", "", " ", "\u202e", "\U0001d54f", "\uffff",
         "\\", '"', "null", "NaN", "messages", "\n\r\t", "é" * 3, "\u0000\ud800"]
ODD_FLOATS = [-0.0, 1e300, -1e300, 5e-324, 1e16, 1.5e-7, float(2**63), math.inf, -math.inf, math.nan]
ODD_INTS = [2**63, -(2**63) - 1, 2**64, 10**100, -(10**300), 2**53 + 1]

texts = st.one_of(st.text(ANY_CHAR, max_size=30), st.sampled_from(NASTY))
numbers = st.one_of(st.integers(), st.integers(min_value=-(10**300), max_value=10**300), st.floats(),
                    st.sampled_from(ODD_FLOATS), st.sampled_from(ODD_INTS))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts, st.binary(max_size=16))
hashables = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts)
keys = st.one_of(texts, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False),
                 st.tuples(st.integers(), texts), st.just("$iso"))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4), st.tuples(inner, inner),
        st.frozensets(hashables, max_size=3), st.sets(hashables, max_size=3),
    ),
    max_leaves=20,
)
messages = st.one_of(
    st.builds(HumanMessage, content=texts),
    st.builds(AIMessage, content=texts, additional_kwargs=st.dictionaries(st.text(max_size=5), values, max_size=2)),
    st.builds(ToolMessage, content=texts, tool_call_id=texts),
    values,  # the messages list may hold plain values too
)


def valid_id(value: Any) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_SESSION_ID_LENGTH or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


valid_ids = st.text(ANY_CHAR, min_size=1, max_size=40).filter(valid_id)
session_ids = st.one_of(
    valid_ids, valid_ids, valid_ids, valid_ids, valid_ids, valid_ids, st.text(ANY_CHAR, max_size=300),
    st.sampled_from(NASTY),
    st.just("x" * (MAX_SESSION_ID_LENGTH + 1)), st.just("y" * MAX_SESSION_ID_LENGTH),
    st.integers(), st.none(), st.binary(max_size=4), st.lists(st.integers(), max_size=2),
)


def valid_key(key: Any) -> bool:
    return isinstance(key, str) and valid_id(key) and not key.startswith("$")


good_keys = st.text(min_size=1, max_size=12).filter(valid_key)
bad_keys = st.one_of(st.sampled_from(NASTY).filter(lambda k: not valid_key(k)), st.integers())
top_keys = st.one_of(good_keys, good_keys, good_keys, good_keys, good_keys, good_keys, bad_keys)
# Mostly valid arguments, with one refused part now and then: each refusal is then checked on
# its own, and the accepted calls exercise the round trip.
valid_datas = st.fixed_dictionaries(
    {"messages": st.lists(messages, max_size=4)},
    optional={"tasks": values, "files": st.dictionaries(texts, texts, max_size=3)},
).flatmap(lambda d: st.dictionaries(good_keys, values, max_size=3).map(lambda extra: {**extra, **d}))
session_datas = st.one_of(
    valid_datas, valid_datas, valid_datas, valid_datas,
    st.dictionaries(top_keys, values, max_size=4), st.lists(values, max_size=2), st.none(), texts,
)
good_metadatas = st.one_of(st.none(), st.dictionaries(keys, values, max_size=4))
metadatas = st.one_of(good_metadatas, good_metadatas, good_metadatas, st.lists(values, max_size=2), texts)
good_hours = st.one_of(st.none(), st.none(), st.floats(min_value=0.5, max_value=MAX_EXPIRES_IN_HOURS),
                       st.integers(1, 10**6), st.just(0))
bad_hours = st.one_of(st.floats(), st.sampled_from([-1, -0.5, MAX_EXPIRES_IN_HOURS * 2, 10**400]), st.booleans(),
                      texts)
hours = st.one_of(good_hours, good_hours, good_hours, bad_hours)


def valid_hours(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and 0 <= number <= MAX_EXPIRES_IN_HOURS


def valid_save(session_id: Any, data: Any, metadata: Any, expires: Any) -> bool:
    """The manager's documented argument rules (app.store.base): accepted iff all hold."""
    return (valid_id(session_id) and isinstance(data, dict) and all(valid_key(k) for k in data)
            and (metadata is None or isinstance(metadata, dict)) and valid_hours(expires))


def same(a: Any, b: Any) -> bool:
    """Equality as the codec documents it: types kept, nan equals nan, -0.0 may read back as 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, BaseMessage):
        return same(dict(a.__dict__), dict(b.__dict__))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items())
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


bad_ids = st.one_of(st.text(ANY_CHAR, max_size=300).filter(lambda v: not valid_id(v)),
                    st.sampled_from(NASTY).filter(lambda v: not valid_id(v)),
                    st.just("x" * (MAX_SESSION_ID_LENGTH + 1)), st.integers(), st.none(), st.binary(max_size=4))
bad_datas = st.one_of(st.dictionaries(bad_keys, values, min_size=1, max_size=2).flatmap(
    lambda bad: valid_datas.map(lambda good: {**good, **bad})), st.lists(values, max_size=2), st.none(), texts)
bad_metadatas = st.one_of(st.lists(values, max_size=2), texts, st.integers())
good_ids = st.one_of(valid_ids, st.just("y" * MAX_SESSION_ID_LENGTH))
valid_saves = st.tuples(good_ids, valid_datas, good_metadatas, good_hours)
_one_bad = [
    st.tuples(bad_ids, valid_datas, good_metadatas, good_hours),
    st.tuples(good_ids, bad_datas, good_metadatas, good_hours),
    st.tuples(good_ids, valid_datas, bad_metadatas, good_hours),
    st.tuples(good_ids, valid_datas, good_metadatas, bad_hours),
    st.tuples(session_ids, session_datas, metadatas, hours),  # anything at all
]
# (one_of would merge repeated branches, so the weights are drawn explicitly.)
saves = st.integers(0, 9).flatmap(lambda n: valid_saves if n < 5 else _one_bad[n % 5])
"""(session_id, session_data, metadata, expires_in_hours): about half valid, half with a refused part."""
