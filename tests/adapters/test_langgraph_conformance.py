"""LangGraph's own checkpointer conformance suite (``langgraph-checkpoint-conformance``) on Isotope.

Every capability is run, base and extended: put, put_writes, get_tuple, list, delete_thread,
delete_for_runs, copy_thread, prune. Each capability gets a fresh saver, as the suite asks; the
sync saver is driven through the same async entry points the suite calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.report import CapabilityReport

from app.adapters.langgraph import AsyncIsotopeSaver, IsotopeSaver

pytestmark = pytest.mark.slow


def _run(name: str, database_url: str, asynchronous: bool) -> CapabilityReport:
    if asynchronous:
        async def factory() -> AsyncIterator[AsyncIsotopeSaver]:
            async with AsyncIsotopeSaver.from_conn_string(database_url) as saver:
                yield saver
    else:
        async def factory() -> AsyncIterator[IsotopeSaver]:  # type: ignore[misc]
            with IsotopeSaver.from_conn_string(database_url) as saver:
                yield saver

    registered = checkpointer_test(name=name)(factory)
    return asyncio.run(validate(registered))


def _assert_all_passed(report: CapabilityReport) -> None:
    failures = {cap: result.failures for cap, result in report.results.items() if result.passed is not True}
    assert not failures, f"capabilities not passed: {failures}"
    assert {c.value for c in ALL_CAPABILITIES} == set(report.results)
    assert sum(r.tests_passed for r in report.results.values()) > 0


@pytest.mark.parametrize("asynchronous", [False, True], ids=["IsotopeSaver", "AsyncIsotopeSaver"])
def test_every_capability_passes(database_url: str, asynchronous: bool) -> None:
    report = _run("Isotope" + ("Async" if asynchronous else ""), database_url, asynchronous)
    _assert_all_passed(report)
