"""The OpenAPI schema fuzzed with schemathesis against a live ``isotope serve`` (with a token).

Every operation gets positive cases (valid by the schema) and negative ones (invalid). Checks: no
5xx; every error is ``{"error": {"code", "message"}}``; statuses, content types and bodies conform
to the schema; invalid input is rejected and valid input accepted; the token is really enforced.
Bounded: ``MAX_EXAMPLES`` cases per operation and mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis import checks as core_checks
from schemathesis.checks import CheckContext
from schemathesis.specs.openapi import checks as openapi_checks

from tests.api.server import ApiServer

pytestmark = pytest.mark.slow
TOKEN = "fuzz-token-0b5e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# CI runs a fixed, bounded set; ISOTOPE_FUZZ_EXAMPLES=500 explores more (and randomly) by hand.
MAX_EXAMPLES = int(os.environ.get("ISOTOPE_FUZZ_EXAMPLES", "30"))
DERANDOMIZE = "ISOTOPE_FUZZ_EXAMPLES" not in os.environ
OPERATIONS = [
    ("GET", "/api/sessions/postgres/sessions"), ("GET", "/api/sessions/postgres/sessions/{session_id}"),
    ("GET", "/api/sessions/postgres/statistics"), ("POST", "/api/sessions/postgres/restore"),
    ("POST", "/api/sessions/postgres/cleanup"), ("GET", "/api/sessions/postgres/connection/test"),
    ("GET", "/api/sessions/restored"), ("POST", "/api/sessions/restore"), ("POST", "/api/sessions"),
    ("POST", "/api/sessions/{session_id}/messages"), ("GET", "/api/sessions/{session_id}/messages"),
    ("DELETE", "/api/sessions/{session_id}"), ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"),
    ("GET", "/api/console/sessions"), ("GET", "/api/console/sessions/{session_id}"),
    ("POST", "/api/console/sessions/{session_id}/restore"), ("GET", "/api/console/overview"),
    ("POST", "/api/sessions/{session_id}/fork"), ("GET", "/api/sessions/{session_id}/export"),
]


@pytest.fixture(scope="module")
def fuzz_server(module_database_url: str, module_data_dir: Path) -> Iterator[ApiServer]:
    server = ApiServer(module_database_url, module_data_dir, config={"api": {"cleanup_interval_s": 3600}},
                       ISOTOPE_API_TOKEN=TOKEN, ISOTOPE_LOG_LEVEL="INFO")
    yield server
    server.stop()
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log, log


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ApiServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


def error_shape(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is JSON ``{"error": {"code": str, "message": str}}``."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"error body is not the standard shape: {body!r}"
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], f"error without a code: {body!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"error without a message: {body!r}"
    assert "Traceback" not in response.text
    return True


CHECKS = [core_checks.not_a_server_error, openapi_checks.status_code_conformance,
          openapi_checks.content_type_conformance, openapi_checks.response_schema_conformance,
          openapi_checks.ignored_auth, openapi_checks.negative_data_rejection,
          openapi_checks.positive_data_acceptance, error_shape]


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    listed = {(op.method.upper(), op.path) for op in (r.ok() for r in api_schema.get_all_operations())}
    assert listed == set(OPERATIONS)


# The probes take no input at all: nothing to make invalid.
CASES = [pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
         for method, path in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if not (mode is GenerationMode.NEGATIVE and path in ("/health", "/ready", "/metrics"))]


@pytest.mark.parametrize("method, path, mode", CASES)
def test_api_conforms(api_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call(headers=AUTH, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=AUTH)

    run()
