"""Untimed bulk seeding through each library's own API, spread over the worker processes.

Seeding 10,000 listing sessions one by one is most of a full run's wall time for the slower
libraries; nothing about it is measured, so it runs in as many processes as there are CPUs.
The main adapter then ``resume()``-s any seeded session it is going to write to.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor
from itertools import repeat

from bench import corpus
from bench.systems import System, system_class


def seed(system: System, conninfo: str, ids: list[str], messages: int, executor: Executor) -> None:
    """Create every session in ``ids`` holding ``messages`` messages."""
    workers = min(os.cpu_count() or 1, max(1, len(ids) // 50))
    if workers == 1:
        _create_all(system, ids, messages)
        return
    chunks = [ids[i::workers] for i in range(workers)]
    list(executor.map(seed_chunk, repeat(system.name), repeat(conninfo), chunks, repeat(messages)))


def seed_chunk(system_name: str, conninfo: str, ids: list[str], messages: int) -> int:
    """In a worker process: an adapter of its own creates its share of the sessions."""
    system = system_class(system_name)(conninfo)
    system.open(create_schema=False)
    try:
        _create_all(system, ids, messages)
    finally:
        system.close()
    return len(ids)


def _create_all(system: System, ids: list[str], messages: int) -> None:
    for sid in ids:
        system.create(sid, corpus.messages(sid, 0, messages))
