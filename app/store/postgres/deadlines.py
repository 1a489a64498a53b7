"""Client-side deadlines: a connection busy past its deadline has its socket shut down.

A frozen server (SIGSTOP, a storage stall that blocks its processes, a paused VM) still has its
kernel acknowledge TCP: keepalives and tcp_user_timeout never fire, the server cannot enforce
statement_timeout, and a query would wait as long as the freeze lasts. Shutting the socket down
makes the waiting call fail at once, as a reset connection does, and the outage store falls back
to the spool. One thread per process (:data:`DEADLINES`), started on first use, checks four
times a second.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg


class Frozen(Exception):
    """The server took no notice of a request within the client-side deadline."""


class Guard:
    """One connection's deadline; ``fired`` once the watchdog shut its socket down."""

    __slots__ = ("deadline", "conn", "fired")

    def __init__(self, deadline: float, conn: psycopg.Connection[Any]) -> None:
        self.deadline = deadline
        self.conn = conn
        self.fired = False


class Deadlines:
    """The watchdog: :meth:`guard` registers a connection for as long as its block runs."""

    def __init__(self) -> None:
        self._guards: set[Guard] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[Guard]:
        guard = Guard(time.monotonic() + seconds, conn)
        with self._lock:
            self._guards.add(guard)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="isotope-deadlines", daemon=True)
                self._thread.start()
        try:
            yield guard
        finally:
            with self._lock:
                self._guards.discard(guard)

    def _watch(self) -> None:
        tick = threading.Event()
        while True:
            tick.wait(0.25)
            now = time.monotonic()
            with self._lock:
                late = [g for g in self._guards if g.deadline <= now and not g.fired]
                for guard in late:
                    guard.fired = True
            for guard in late:
                _shut_down(guard.conn)


# One watchdog per process, shared by every store.
DEADLINES = Deadlines()


def _shut_down(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(OSError, psycopg.Error, ValueError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
