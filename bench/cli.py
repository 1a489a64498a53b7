"""``python -m bench``: run every system against one PostgreSQL and write Markdown + JSON.

Exit status 0 when every available system ran every phase, 1 when a phase failed (for
instance a load that did not return what was written), 2 when the run could not happen at all
(no server, no permission to create databases); never because something was slow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import meta
from bench.concurrency import report as conc_report
from bench.concurrency import scenario as conc
from bench.goals import evaluate
from bench.plan import Plan, make_plan
from bench.probes import find_waldump
from bench.report import render
from bench.runner import Environment, log, run_repetitions
from bench.server import Cluster, embedded_server
from bench.summary import build_summary
from bench.systems import REGISTRY, system_modules

# Cell flags worth a note under the tables: they explain an outlier without hiding it.
FLAGS = {
    "checkpoint_in_window": "a checkpoint started inside the timed window (its WAL includes full-page images)",
    "autovacuum_at_edges": "an autovacuum worker was running when the timed window opened or closed",
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repetition, < 2 minutes")
    parser.add_argument("--database-url", help="libpq URL of a server to use (default: a private embedded one)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--repeat", type=_positive, help="repetitions (default 2; 1 with --quick)")
    parser.add_argument("--systems", help="comma-separated subset (the floor is always included)")
    group = parser.add_argument_group("concurrency at model latency (issue 12; part of every run)")
    group.add_argument("--concurrency", action="store_true", help="run only this scenario")
    group.add_argument("--concurrency-cells", type=_cells, metavar="NxS,...",
                       help=f"clients x model latency in seconds (default {conc.DEFAULT_CELLS}; "
                            f"{conc.QUICK_CELLS} with --quick)")
    group.add_argument("--concurrency-turns", type=_positive, metavar="T",
                       help="timed turns per client after one warm-up turn (default 3; 2 with --quick)")
    group.add_argument("--concurrency-json", action="store_true",
                       help="send turns as plain JSON requests instead of Server-Sent Events")
    group.add_argument("--concurrency-systems", type=_conc_systems, metavar="NAME,...",
                       help=f"a subset of {','.join(conc.SYSTEMS)} (default: both)")
    group.add_argument("--no-concurrency", action="store_true", help="leave this scenario out of the run")
    args = parser.parse_args(argv)
    if args.concurrency and args.no_concurrency:
        parser.error("--concurrency and --no-concurrency exclude each other")
    return args


def _conc_systems(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [n for n in names if n not in conc.SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(conc.SYSTEMS)} (got {text!r})")
    return names


def _cells(text: str) -> tuple[tuple[int, float], ...]:
    try:
        return conc.parse_cells(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _run(args)
    except Exception as exc:  # the CLI's one boundary: print the chain of causes, not a traceback
        chain = []
        cause: BaseException | None = exc
        while cause is not None:
            chain.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__ or cause.__context__
        log("bench failed: " + "\n  caused by ".join(chain))
        return 2


def _concurrency_options(args: argparse.Namespace) -> conc.Options:
    cells = args.concurrency_cells or conc.parse_cells(conc.QUICK_CELLS if args.quick else conc.DEFAULT_CELLS)
    turns = args.concurrency_turns or (2 if args.quick else 3)
    systems = args.concurrency_systems or conc.SYSTEMS
    return conc.Options(cells=cells, turns=turns, stream=not args.concurrency_json, systems=systems)


def _concurrency_failed(result: dict[str, Any] | None) -> bool:
    """A cell that could not run or a session that does not hold what was acknowledged (never a time)."""
    return result is not None and any(
        "error" in res or res["stored"]["mismatched"] for cell in result["cells"] for res in cell["systems"].values()
    )


def _run_concurrency_only(args: argparse.Namespace) -> int:
    options = _concurrency_options(args)
    started = time.monotonic()
    with _server(args.database_url) as (url, _data_directory, _bin_dir, kind):
        cluster = Cluster(url)
        facts = cluster.facts()
        try:
            result = conc.run_scenario(cluster, options, log)
        finally:
            cluster.drop_all()
    result["goals"] = conc_report.goal_values(result)
    info = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": time.monotonic() - started,
        "loadavg_at_end": os.getloadavg(),
        "server": facts,
        "server_kind": kind,
        "machine": meta.machine(),
        "python": platform.python_version(),
        "versions": meta.versions(),
    }
    markdown = conc_report.render_standalone(info, result)
    _write_files(args.out, "latest-concurrency", "-concurrency", {"meta": info, "concurrency": result}, markdown)
    print(markdown)
    return 1 if _concurrency_failed(result) else 0


def _run(args: argparse.Namespace) -> int:
    if args.concurrency:
        return _run_concurrency_only(args)
    plan = make_plan(args.quick, args.repeat)
    names = _systems(args.systems)
    started = time.monotonic()
    with _server(args.database_url) as (url, data_directory, bin_dir, kind):
        cluster = Cluster(url, data_directory)
        facts = cluster.facts()
        env_waldump = find_waldump(facts["version"], bin_dir)
        try:
            with _workers(plan, names) as (executor, manager):
                env = Environment(cluster, plan, executor, manager, env_waldump)
                reps = run_repetitions(env, names)
            concurrency = None if args.no_concurrency else conc.run_scenario(cluster, _concurrency_options(args), log)
        finally:
            cluster.drop_all()
    result = _result(plan, names, reps, facts, kind, time.monotonic() - started)
    markdown = render(result)
    if concurrency is not None:
        concurrency["goals"] = conc_report.goal_values(concurrency)
        result["concurrency"] = concurrency
        markdown += "\n" + "\n".join(conc_report.render_section(concurrency))
    _write(args.out, plan, result, markdown)
    print(markdown)
    failed = any(res.get("errors") for rep in reps for res in rep["systems"].values())
    return 1 if failed or _concurrency_failed(concurrency) else 0


def _systems(selection: str | None) -> list[str]:
    if not selection:
        return list(REGISTRY)
    wanted = {s.strip() for s in selection.split(",") if s.strip()} | {"floor"}
    unknown = wanted - set(REGISTRY)
    if unknown:
        raise SystemExit(f"unknown system(s) {sorted(unknown)}; choose from {list(REGISTRY)}")
    return [s for s in REGISTRY if s in wanted]


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[tuple[str, str | None, str | None, str]]:
    if url:
        yield url, None, None, "server given by --database-url"
        return
    log("starting a private PostgreSQL (pgserver) ...")
    with embedded_server() as (embedded_url, pgdata, bin_dir):
        yield embedded_url, pgdata, bin_dir, "embedded pgserver, unix socket"


@contextlib.contextmanager
def _workers(plan: Plan, names: list[str]) -> Iterator[tuple[ProcessPoolExecutor, Any]]:
    # forkserver, not fork: the parent holds libpq connections and threads that must not be
    # cloned. Not plain spawn either: 8 workers each importing LangGraph, the Agents SDK and
    # the rest cost tens of CPU-seconds; the fork server imports them once and forks workers.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bench.seeding", "bench.throughput", *system_modules(names)])
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(max_workers=max(plan.throughput_clients), mp_context=context) as executor,
    ):
        yield executor, manager


def _result(
    plan: Plan, names: list[str], reps: list[dict[str, Any]], facts: dict[str, Any], kind: str, wall: float
) -> dict[str, Any]:
    info = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": wall,
        "loadavg_at_end": os.getloadavg(),
        "plan": plan.__dict__,
        "systems": names,
        "server": facts,
        "server_kind": kind,
        "machine": meta.machine(),
        "python": platform.python_version(),
        "versions": meta.versions(),
        "method": meta.METHOD,
        "notes": _notes(reps),
    }
    return {
        "meta": info,
        "summary": build_summary(reps, names, plan.histories, plan.throughput_clients),
        "goals": evaluate(reps, plan.histories),
        "repetitions": reps,
    }


def _notes(reps: list[dict[str, Any]]) -> list[str]:
    notes = []
    sources = {res.get("fpi_source") for rep in reps for res in rep["systems"].values() if res.get("available")}
    if sources == {None}:
        notes.append("full-page images: not visible on this server (no pg_walinspect, no local pg_waldump)")
    for rep in reps:
        for name, res in rep["systems"].items():
            cells = res.get("cells") or {}
            for key, what in FLAGS.items():
                flagged = [h for h, cell in cells.items() if cell.get(key)]
                if flagged:
                    notes.append(f"repetition {rep['index']}: {name} H={', '.join(flagged)}: {what}")
    if any(res.get("checkpoint_allowed") is False for rep in reps for res in rep["systems"].values()):
        notes.append("CHECKPOINT was not allowed for this role: WAL figures include full-page images")
    return notes


def _write(out: Path, plan: Plan, result: dict[str, Any], markdown: str) -> None:
    stem = "latest-quick" if plan.quick else "latest"
    _write_files(out, stem, "-quick" if plan.quick else "", result, markdown)


def _write_files(out: Path, stem: str, suffix: str, result: dict[str, Any], markdown: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + suffix
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(result, indent=1, default=str)
    for path in (out / f"{stem}.json", runs / f"{stamp}.json"):
        path.write_text(payload + "\n", encoding="utf-8")
    for path in (out / f"{stem}.md", runs / f"{stamp}.md"):
        path.write_text(markdown + "\n", encoding="utf-8")
    log(f"wrote {out / stem}.md and .json (and a copy under {runs})")
