"""Hostile input through the HTTP API of a real ``isotope serve``: round trip, or a 4xx that changes nothing.

Bodies are raw JSON text, so they can carry what a Python client would never send: NaN and
Infinity tokens, lone surrogates as ``\\ud800`` escapes, NUL, 400-digit numbers, deep nesting.
The API documents its rendering of stored values (``app.core.present.jsonable``: nan and
infinities as strings); a 2xx must match it, a 4xx must be ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.core.present import jsonable
from app.store.base import MAX_SESSION_ID_LENGTH
from tests.api.server import ApiServer
from tests.hostile.strategies import ANY_CHAR, NASTY, valid_id

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(  # see test_manager_input.py
        "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"),
]
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400),
                         st.floats(), st.text(ANY_CHAR, max_size=20), st.sampled_from(NASTY))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(ANY_CHAR, max_size=8), inner, max_size=4)), max_leaves=15)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


metadata_values = st.integers(0, 9).flatmap(lambda n: st.one_of(
    st.dictionaries(st.text(ANY_CHAR, max_size=8), json_values, max_size=4) if n < 7
    else st.integers(1, 200).map(lambda d: {"deep": nested(d)}) if n < 9 else json_values))
session_id_values = st.integers(0, 9).flatmap(lambda n: st.none() if n < 4 else st.text(
    ANY_CHAR, min_size=1, max_size=40).filter(valid_id) if n < 7 else st.one_of(
    st.text(ANY_CHAR, max_size=300), st.sampled_from(NASTY), st.integers(), st.just("z" * (MAX_SESSION_ID_LENGTH + 1))))
hours_values = st.integers(0, 9).flatmap(lambda n: st.none() if n < 6 else st.one_of(
    st.floats(), st.integers(-5, 10**7), st.booleans(), st.text(max_size=3)))


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def clearly_valid(body: dict[str, Any]) -> bool:
    """Requests the API must accept: plain JSON metadata, a usable id, a sane expiry."""
    metadata, sid, hours = body.get("metadata"), body.get("session_id"), body.get("expires_in_hours")
    finite = "NaN" not in json.dumps(metadata) and "Infinity" not in json.dumps(metadata)
    return (isinstance(metadata, dict) and finite and depth_of(metadata) <= 60
            and (sid is None or (isinstance(sid, str) and valid_id(sid)))
            and (hours is None or (type(hours) in (int, float) and math.isfinite(hours) and 0 < hours <= 1e6)))


@pytest.fixture(scope="module")
def api(pg_server: Any, template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    name = f"isotope_hostile_{uuid.uuid4().hex[:10]}"
    url = pg_server.create_database(name, template=template_database)
    server = ApiServer(url, tmp_path_factory.mktemp("hostile-api"), config={"api": {"cleanup_interval_s": 3600}},
                       ISOTOPE_LOG_LEVEL="INFO")
    yield server
    server.stop()
    log = server.log()
    pg_server.drop_database(name)
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


@pytest.fixture(scope="module")
def client(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


def post_raw(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    text = json.dumps(body, allow_nan=True, ensure_ascii=True)  # lone surrogates travel as \\udXXX
    return client.post(path, content=text.encode("ascii"), headers={"content-type": "application/json"})


def is_error(response: httpx.Response, *statuses: int) -> bool:
    if response.status_code not in statuses:
        return False
    error = response.json()["error"]
    return isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]


def total(client: httpx.Client) -> int:
    return int(client.get("/api/sessions/postgres/sessions", params={"include_inactive": "true"}).json()["total"])


@PROPERTY
@given(metadata=metadata_values, session_id=session_id_values, hours=hours_values)
def test_create_session_round_trips_or_refuses(client: httpx.Client, metadata: Any, session_id: Any,
                                               hours: Any) -> None:
    body: dict[str, Any] = {"metadata": metadata}
    if session_id is not None:
        body["session_id"] = session_id if not isinstance(session_id, str) else f"{session_id}-{uuid.uuid4().hex[:6]}"
    if hours is not None:
        body["expires_in_hours"] = hours
    before = total(client)
    response = post_raw(client, "/api/sessions", body)
    assert response.status_code < 500, response.text
    if response.status_code != 201:
        event(f"refused {response.status_code}")
        assert is_error(response, 400, 409, 413, 422), response.text
        assert not clearly_valid(body), (body, response.text)
        assert total(client) == before
        return
    event("created")
    created = response.json()
    parsed = json.loads(json.dumps(body, allow_nan=True))  # what the server's parser saw
    assert created["metadata"] == jsonable(parsed["metadata"]), (created["metadata"], parsed["metadata"])
    path = f"/api/sessions/postgres/sessions/{quote(created['session_id'], safe='')}"
    fetched = client.get(path)
    if hours == 0:
        assert fetched.status_code == 404
        return
    assert fetched.status_code == 200 and fetched.json()["metadata"] == created["metadata"]
    if "session_id" in body:
        assert created["session_id"] == parsed["session_id"]


@pytest.fixture(scope="module")
def chat(client: httpx.Client) -> str:
    response = client.post("/api/sessions", json={"metadata": {"name": "hostile chat"}})
    assert response.status_code == 201
    return str(response.json()["session_id"])


def takeable(content: Any) -> bool:
    """The API takes any non-blank text; a lone surrogate is refused (422) by its string validation."""
    return isinstance(content, str) and bool(content.strip()) and valid_id(content[:1]) and all(
        not 0xD800 <= ord(c) <= 0xDFFF for c in content)


@PROPERTY
@given(content=st.one_of(st.text(ANY_CHAR, min_size=1, max_size=200), st.sampled_from(NASTY),
                         st.text(ANY_CHAR, max_size=3).map(lambda s: s * 20_000), json_scalars))
def test_a_message_round_trips_or_is_refused(client: httpx.Client, chat: str, content: Any) -> None:
    path = f"/api/sessions/{quote(chat, safe='')}/messages"
    before = client.get(path).json()
    response = post_raw(client, path, {"content": content})
    assert response.status_code < 500, response.text
    after = client.get(path).json()
    if response.status_code != 200:
        event(f"refused {response.status_code}")
        assert is_error(response, 400, 413, 422), response.text
        assert not takeable(content), (content[:80], response.text[:300])
        assert after["version"] == before["version"] and after["message_count"] == before["message_count"]
        return
    event("taken")
    assert takeable(content)
    assert response.json()["version"] == before["version"] + 1 == after["version"]
    humans = [m for m in after["messages"] if m["type"] == "human"]
    assert humans[-1]["content"] == content  # NUL, surrogates and all


@PROPERTY
@given(session_id=st.one_of(st.text(ANY_CHAR, min_size=1, max_size=300), st.sampled_from(NASTY + ["..", "/", "%00"])))
def test_hostile_ids_in_paths_are_404_or_422(client: httpx.Client, session_id: str) -> None:
    # '.' too: a client would drop "." and ".." path segments before sending them.
    quoted = quote(session_id.encode("utf-8", "surrogatepass"), safe="").replace(".", "%2E")
    for method, path in (("GET", f"/api/sessions/postgres/sessions/{quoted}"),
                         ("GET", f"/api/sessions/{quoted}/messages"),
                         ("POST", f"/api/sessions/{quoted}/messages"),
                         ("DELETE", f"/api/sessions/{quoted}")):
        kwargs: dict[str, Any] = {"json": {"content": "hello"}} if method == "POST" else {}
        response = client.request(method, path, **kwargs)
        assert response.status_code < 500, (method, path, response.text)
        assert is_error(response, 400, 404, 422), (method, path, response.status_code, response.text)
