"""Runs the concurrency scenario: the fake model, then for every cell each system's server in turn.

Per cell and system: a fresh database, a fresh server process (``isotope serve`` configured with
``engine.model: openai`` on the fake model, or ``bench.concurrency.lg_app``), the clients of
``bench.concurrency.load``, the server stopped, the database dropped. Both servers get the same
pool size (``store.pool_max_size``; LangGraph's ``AsyncConnectionPool`` ``max_size``). A failure
is recorded against its cell and system; the other cells still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from psycopg.conninfo import conninfo_to_dict

from app.config import StoreConfig
from bench.concurrency import load
from bench.concurrency.load import CellSpec, ConnectionPoller
from bench.concurrency.procs import Child, child_env, free_port, listening_socket, raise_open_files
from bench.server import Cluster

SYSTEMS = ("isotope", "langgraph")
LABELS = {
    "isotope": "`isotope serve`, engine.model: openai",
    "langgraph": "LangGraph `AsyncPostgresSaver` + FastAPI",
}
DEFAULT_CELLS = "64x1,512x8"
QUICK_CELLS = "16x0.5"
SETUP_PARALLELISM = 16


@dataclass(frozen=True)
class Options:
    cells: tuple[tuple[int, float], ...]
    turns: int = 3
    stream: bool = True
    pool_max_size: int = StoreConfig().pool_max_size
    systems: tuple[str, ...] = SYSTEMS


def parse_cells(text: str) -> tuple[tuple[int, float], ...]:
    """``"64x1,512x8"`` -> ((64, 1.0), (512, 8.0)): clients x model latency in seconds."""
    cells = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        clients, sep, latency = part.partition("x")
        try:
            n, seconds = int(clients), float(latency)
        except ValueError:
            n, seconds = 0, 0.0
        if not sep or n < 1 or not 0 < seconds <= 600:
            raise ValueError(f"concurrency cell {part!r}: write CLIENTSxSECONDS, e.g. 64x1 or 512x8")
        cells.append((n, seconds))
    if not cells:
        raise ValueError("no concurrency cells given (e.g. 64x1,512x8)")
    return tuple(cells)


def run_scenario(cluster: Cluster, options: Options, log: Callable[[str], None]) -> dict[str, Any]:
    most = max(n for n, _ in options.cells)
    open_files = raise_open_files(4 * most + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="isobench-conc-"))
    result: dict[str, Any] = {
        "turns_per_client": options.turns, "stream": options.stream, "pool_max_size": options.pool_max_size,
        "systems": list(options.systems), "labels": {s: LABELS[s] for s in options.systems},
        "open_files_limit": open_files, "cells": [],
    }
    with contextlib.ExitStack() as stack:
        model = _start_model(workdir)
        stack.callback(model.stop)
        model.wait_ready("/stats")
        for index, (clients, latency) in enumerate(options.cells):
            spec = CellSpec(clients, latency, options.turns, options.stream)
            order = options.systems if index % 2 == 0 else options.systems[::-1]
            cell: dict[str, Any] = {"clients": clients, "latency_s": latency, "order": list(order), "systems": {}}
            for system in order:
                log(f"[concurrency {spec.label}] {system} ...")
                started = time.monotonic()
                cell["systems"][system] = _run_one(cluster, system, spec, options, model, workdir, log)
                log(f"[concurrency {spec.label}] {system}: {_brief(cell['systems'][system])}"
                    f" ({time.monotonic() - started:.0f} s)")
            result["cells"].append(cell)
    return result


def _brief(res: dict[str, Any]) -> str:
    if "error" in res:
        return f"FAILED: {res['error']}"
    return (f"ratio {res['ratio']:.2f}, p50 x{res.get('p50_ratio', float('nan')):.2f}, "
            f"model peak {res['model']['peak']}, PG peak {res['pg']['peak']}, failed {res['turns_failed']}")


def _start_model(workdir: Path) -> Child:
    sock = listening_socket()
    port = int(sock.getsockname()[1])
    try:
        return Child("fake model", ["-m", "bench.concurrency.fake_model", "--fd", str(sock.fileno())],
                     f"http://127.0.0.1:{port}", workdir / "fake-model.log", child_env(), workdir,
                     pass_fds=(sock.fileno(),))
    finally:
        sock.close()  # the child has its own copy


def _run_one(cluster: Cluster, system: str, spec: CellSpec, options: Options, model: Child, workdir: Path,
             log: Callable[[str], None]) -> dict[str, Any]:
    model_url = model.url
    conninfo = cluster.create_database(f"conc_{system}")
    try:
        server = _start_server(system, conninfo, spec, options, f"{model_url}/lat/{spec.latency_s:g}/v1", workdir)
        try:
            server.wait_ready("/health")
            dbname = str(conninfo_to_dict(conninfo)["dbname"])
            return load.run(_measure(system, server, spec, cluster.url, dbname, model))
        except Exception as exc:
            log("".join(traceback.format_exception(exc)[-4:]))
            return {"error": f"{type(exc).__name__}: {exc}", "server_log": server.log_tail()}
        finally:
            server.stop()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        cluster.drop_database(conninfo)


def _start_server(system: str, conninfo: str, spec: CellSpec, options: Options, model_url: str,
                  workdir: Path) -> Child:
    tag = f"{system}-{spec.clients}x{spec.latency_s:g}"
    if system == "isotope":
        port = free_port()
        config = {
            "engine": {"model": "openai", "openai": {
                "base_url": model_url, "model": "bench", "api_key_env": "ISOTOPE_BENCH_NO_KEY",
                "max_retries": 0, "timeout_s": spec.turn_timeout_s}},
            "store": {"pool_max_size": options.pool_max_size},
            "log_level": "WARNING",
        }
        config_path = workdir / f"{tag}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        data_dir = workdir / f"{tag}-data"
        data_dir.mkdir(exist_ok=True)
        env = child_env(ISOTOPE_CONFIG=str(config_path), ISOTOPE_DATABASE_URL=conninfo, ISOTOPE_DATA_DIR=str(data_dir))
        return Child("isotope serve", ["-m", "app.cli.main", "serve", "--port", str(port)],
                     f"http://127.0.0.1:{port}", workdir / f"{tag}.log", env, workdir)
    sock = listening_socket()
    try:
        args = ["-m", "bench.concurrency.lg_app", "--fd", str(sock.fileno()), "--database-url", conninfo,
                "--model-url", model_url, "--pool-max-size", str(options.pool_max_size),
                "--timeout", str(spec.turn_timeout_s)]
        return Child("langgraph app", args, f"http://127.0.0.1:{sock.getsockname()[1]}", workdir / f"{tag}.log",
                     child_env(), workdir, pass_fds=(sock.fileno(),))
    finally:
        sock.close()


async def _measure(system: str, server: Child, spec: CellSpec, admin_url: str, dbname: str,
                   model_process: Child) -> dict[str, Any]:
    model_url = model_process.url
    ids = [f"conc-{i:04d}-{secrets.token_hex(3)}" for i in range(spec.clients)]
    with ConnectionPoller(admin_url, dbname) as poller:
        async with (load.Fleet(server.url, spec.clients, spec) as fleet,
                    httpx.AsyncClient(base_url=model_url, timeout=30.0) as model):
            if system == "isotope":
                await _create_sessions(fleet.clients[0], ids)
            warm, _ = await load.play(fleet, ids, _warmup(spec), first=0)
            await _quiet(model)
            (await model.post("/stats/reset")).raise_for_status()
            cpu_before = _cpu(server, model_process)
            timed, wall = await load.play(fleet, ids, spec, first=1)
            cpu_after = _cpu(server, model_process)
            gauge = (await model.get("/stats")).json()
            timings = (await model.get("/stats/timings")).json()
            stored = await _check_stored(fleet.clients[0], ids, warm, timed)
    result = load.summarise(spec, timed, wall, timings)
    result["warmup_failed"] = sum(not o.ok for per in warm for o in per)
    result["model"] = gauge
    result["pg"] = {"peak": poller.peak, "peak_active": poller.peak_active, "polls": poller.polls,
                    "error": poller.error}
    result["stored"] = stored
    result["cpu_ms_per_turn"] = {k: _per_turn(cpu_before[k], cpu_after[k], result["turns_ok"]) for k in cpu_before}
    result["loadavg"] = os.getloadavg()[0]
    return result


def _cpu(server: Child, model: Child) -> dict[str, float | None]:
    """CPU seconds so far of the server, the load generator (this process) and the fake model."""
    return {"server": server.cpu_seconds(), "clients": time.process_time(), "model": model.cpu_seconds()}


def _per_turn(before: float | None, after: float | None, turns: int) -> float | None:
    return None if before is None or after is None or not turns else (after - before) * 1000 / turns


def _warmup(spec: CellSpec) -> CellSpec:
    return CellSpec(spec.clients, spec.latency_s, 1, spec.stream)


async def _quiet(model: httpx.AsyncClient) -> None:
    """Wait (bounded) until no request is in flight at the model: the window starts from nothing."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if (await model.get("/stats")).json()["in_flight"] == 0:
            return
        await asyncio.sleep(0.05)


async def _create_sessions(client: httpx.AsyncClient, ids: list[str]) -> None:
    async def create(session_id: str) -> None:
        response = await client.post("/api/sessions", json={"session_id": session_id,
                                                            "metadata": {"bench": "concurrency"}})
        if response.status_code != 201:
            raise RuntimeError(f"creating session {session_id}: HTTP {response.status_code} {response.text[:200]}")

    await load.gather_limited([functools.partial(create, sid) for sid in ids], SETUP_PARALLELISM)


async def _check_stored(client: httpx.AsyncClient, ids: list[str], warm: list[list[load.Outcome]],
                        timed: list[list[load.Outcome]]) -> dict[str, Any]:
    """Every session holds two messages per turn that succeeded: each stored once, none lost."""
    async def count(session_id: str) -> int:
        response = await client.get(f"/api/sessions/{session_id}/messages", params={"limit": 0})
        response.raise_for_status()
        return int(response.json()["message_count"])

    counts = await load.gather_limited([functools.partial(count, sid) for sid in ids], SETUP_PARALLELISM)
    expected = [2 * sum(o.ok for o in w + t) for w, t in zip(warm, timed, strict=True)]
    wrong = [(sid, c, e) for sid, c, e in zip(ids, counts, expected, strict=True) if c != e]
    return {"sessions": len(ids), "mismatched": len(wrong), "examples": wrong[:5]}
