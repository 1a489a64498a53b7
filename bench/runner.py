"""Runs the repetitions: every system in turn, each in a fresh database, the order reversed on
every other repetition so that warm caches and a growing WAL do not favour one side.

System by system, not phase by phase: a database is dropped before the next system starts, so
autovacuum catching up on one system's seeding (LangGraph's TOAST tables at H=1000 are large)
can never land in another system's timed window and WAL figure."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.cell import Reference, measure_cell
from bench.phases import measure_listing, measure_roundtrip
from bench.plan import Plan
from bench.probes import Probe
from bench.server import Cluster
from bench.systems import FLOOR, System, Unavailable, system_class
from bench.throughput import measure_throughput


@dataclass
class Environment:
    cluster: Cluster
    plan: Plan
    executor: Executor
    manager: Any  # a multiprocessing Manager, for the clients' start barrier
    waldump: str | None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_repetitions(env: Environment, names: list[str]) -> list[dict[str, Any]]:
    repetitions = []
    for index in range(env.plan.repeat):
        order = names if index % 2 == 0 else names[::-1]
        rep: dict[str, Any] = {"index": index + 1, "order": order, "systems": {}}
        rep["roundtrip_ms"] = _roundtrip(env)
        for name in order:
            started = time.monotonic()
            log(f"[repetition {index + 1}/{env.plan.repeat}] {name} ...")
            rep["systems"][name] = run_system(env, name)
            log(f"[repetition {index + 1}/{env.plan.repeat}] {name} done in {time.monotonic() - started:.1f}s")
        repetitions.append(rep)
    return repetitions


def _roundtrip(env: Environment) -> dict[str, Any]:
    probe = Probe(env.cluster.url, None, None)
    try:
        return measure_roundtrip(probe, env.plan.roundtrip_calls)
    finally:
        probe.close()


def run_system(env: Environment, name: str) -> dict[str, Any]:
    try:
        cls = system_class(name)
    except Unavailable as exc:
        return {"available": False, "reason": str(exc)}
    with contextlib.ExitStack() as stack:
        conninfo = _database(env, stack, name)
        probe = stack.enter_context(contextlib.closing(Probe(conninfo, env.cluster.data_directory, env.waldump)))
        system = cls(conninfo)
        try:
            system.open()
        except Unavailable as exc:
            return {"available": False, "reason": str(exc)}
        stack.callback(_quietly_close, system)
        reference = _reference(env, stack, name)
        return _run_phases(env, system, probe, conninfo, reference)
    raise AssertionError("unreachable")  # ExitStack swallows nothing; keeps type checkers calm


def _database(env: Environment, stack: contextlib.ExitStack, name: str) -> str:
    conninfo = env.cluster.create_database(name)
    stack.callback(env.cluster.drop_database, conninfo)
    return conninfo


def _reference(env: Environment, stack: contextlib.ExitStack, name: str) -> Reference:
    """A floor on a database of its own, timed turn by turn alongside the system (see bench.cell)."""
    conninfo = _database(env, stack, f"{name}_ref")
    floor = system_class(FLOOR)(conninfo)
    floor.open()
    stack.callback(_quietly_close, floor)
    probe = stack.enter_context(contextlib.closing(Probe(conninfo, None, None)))
    return Reference(floor, probe)


def _quietly_close(system: System) -> None:
    with contextlib.suppress(Exception):
        system.close()


def _run_phases(env: Environment, system: System, probe: Probe, conninfo: str, reference: Reference) -> dict[str, Any]:
    plan = env.plan
    result: dict[str, Any] = {
        "available": True,
        "label": system.label,
        "fpi_source": probe.fpi_source,
        "cells": {},
        "errors": {},
    }
    for history in plan.histories:
        run = partial(measure_cell, system, probe, history, plan.sessions_per_cell, reference)
        cell = _phase(result, f"H={history}", run)
        if cell is not None:
            result["cells"][str(history)] = cell
    throughput = partial(measure_throughput, system, conninfo, plan, env.executor, env.manager)
    result["throughput"] = _phase(result, "throughput", throughput)
    listing = partial(measure_listing, system, probe, plan, conninfo, env.executor)
    result["listing"] = _phase(result, "listing", listing)
    result["checkpoint_allowed"] = probe.checkpoint_allowed
    return result


def _phase(result: dict[str, Any], name: str, run: Callable[[], Any]) -> Any:
    """Run one phase; a failure is recorded against it and the other phases still run."""
    # The machine may be shared; the load average lets a reader judge a noisy figure.
    result.setdefault("loadavg", {})[name] = os.getloadavg()[0]
    started = time.monotonic()
    try:
        value = run()
    except Exception as exc:
        result["errors"][name] = f"{type(exc).__name__}: {exc}"
        log(f"  {result['label']}: {name} FAILED: {type(exc).__name__}: {exc}")
        log("".join(traceback.format_exception(exc)[-6:]))
        return None
    log(f"  {name}: {time.monotonic() - started:.1f}s")
    return value
