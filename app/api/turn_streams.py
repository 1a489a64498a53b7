"""Streamed turns for HTTP clients: one thread per engine turn, its events handed to the event loop.

:class:`TurnStreams` starts them and knows which are running; a :class:`TurnStream` is one of
them, read by the response (JSON or Server-Sent Events).

**Why a thread of its own.** A turn is the engine's synchronous generator; it holds the session's
lock (a PostgreSQL advisory lock on a connection the store finds through a thread-local) from its
first event to the end of its save. Iterating it from the server's thread pool would resume it on
a different thread at every event, and the lock would be looked up on the wrong one. So each turn
runs start to end on one thread, and its events reach the response through an asyncio queue.

**A client that goes away** does not stop the turn: it finishes and is saved, and the client finds
the reply in ``GET /api/sessions/{id}/messages``. Only shutdown abandons turns.

**Shutdown.** From the moment the server is asked to stop, new turns get 503. Turns already
running get ``api.shutdown_grace_s`` to finish; past that, a turn is abandoned at its next event:
the engine closes it, releases the lock and saves nothing, and the client gets an ``error`` event
saying the session is unchanged. A turn stuck inside one call (the model, the save) past the grace
period plus a second is reported to its client as "outcome unknown, reload the session"; the store
writes a turn in one transaction, so the session then holds either the whole turn or none of it.

**Capacity.** Every running turn holds a pooled connection for its lock, so at most
``store.pool_max_size - 2`` turns run at once (two connections stay free for reads); a turn that
cannot start within ``store.lock_timeout_s`` gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Generator
from typing import Any

import anyio

from app import metrics as core_metrics
from app.agent.events import Event, error_event
from app.api import metrics as api_metrics
from app.api.context import Lifecycle
from app.api.errors import ServiceUnavailable, describe
from app.api.redact import scrub
from app.core.engine import IsotopeEngine
from app.errors import IsotopeError

log = logging.getLogger("isotope.api.turns")

KEEPALIVE_S = 15.0
_END = object()


class TurnStreams:
    """Starts turns and knows which are running."""

    def __init__(self, engine: IsotopeEngine, lifecycle: Lifecycle, max_turns: int, wait_s: float) -> None:
        self.engine = engine
        self.lifecycle = lifecycle
        self.max_turns = max_turns
        self.wait_s = wait_s
        self._slots = asyncio.Semaphore(max_turns)
        self._threads: set[threading.Thread] = set()

    async def start(self, session_id: str, content: str) -> TurnStream:
        """Check the session and start its turn; SessionNotFound/InvalidInput before anything runs."""
        if self.lifecycle.closing:
            raise _shutting_down()
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.wait_s)
        except TimeoutError:
            raise ServiceUnavailable(f"{self.max_turns} turns are already running on this server and none "
                                     f"finished within {self.wait_s:g} s; retry shortly", code="busy") from None
        try:
            if self.lifecycle.closing:  # the stop signal came while this request waited for a slot
                raise _shutting_down()
            events = await anyio.to_thread.run_sync(self.engine.turn, content, session_id)
        except BaseException:
            self._slots.release()
            raise
        turn = TurnStream(session_id, events, self.lifecycle, asyncio.get_running_loop(), self._slots)
        thread = threading.Thread(target=self._run, args=(turn,), name=f"isotope-turn-{session_id[:32]}",
                                  daemon=True)
        self._threads.add(thread)
        thread.start()
        return turn

    def _run(self, turn: TurnStream) -> None:
        try:
            turn.run()
        finally:
            self._threads.discard(threading.current_thread())

    def running(self) -> int:
        return len(self._threads)

    def wait_idle(self, timeout: float) -> int:
        """Wait up to ``timeout`` for running turns to end; return how many are still running."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.running()


class TurnStream:
    """One running turn. The thread side calls :meth:`run`; the response side iterates :meth:`events`."""

    def __init__(self, session_id: str, events: Generator[Event, None, None], lifecycle: Lifecycle,
                 loop: asyncio.AbstractEventLoop, slots: asyncio.Semaphore) -> None:
        self.session_id = session_id
        self._events = events
        self._lifecycle = lifecycle
        self._loop = loop
        self._slots = slots
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.failure: BaseException | None = None
        self.outcome = "error"

    # -- thread side ---------------------------------------------------------------------------

    def run(self) -> None:
        started = time.perf_counter()
        api_metrics.TURNS_RUNNING.inc()
        try:
            self._drive()
        except IsotopeError as exc:  # busy, a failed model call, the store's errors, the session vanished
            self.failure = exc
            self._push(_error_event(self.session_id, exc))
        except Exception as exc:  # a bug: describe() logs it (one line) and hides its text from the client
            self.failure = exc
            self._push(_error_event(self.session_id, exc))
        finally:
            self._push(_END)  # the client's answer is complete; closing below may take a while
            core_metrics.TURNS.labels(self.outcome).inc()
            core_metrics.TURN_SECONDS.observe(time.perf_counter() - started)
            try:
                # The engine releases the session's lock. For an abandoned turn this waits for the
                # model call in flight (LangGraph finishes its running step); nothing is saved.
                self._events.close()
            finally:
                api_metrics.TURNS_RUNNING.dec()
                self._call(self._slots.release)

    def _drive(self) -> None:
        for event in self._events:
            kind = event.get("type")
            self._push(event)
            if kind == "done":
                self.outcome = "done"
                return
            if self._lifecycle.past_grace():
                self.outcome = "abandoned"
                self.failure = ServiceUnavailable(
                    f"the server is shutting down; this turn was abandoned before it was saved: session "
                    f"{self.session_id!r} is unchanged, send the message again", code="shutting_down")
                log.warning("shutdown: abandoned the turn on session %s (nothing saved)", self.session_id)
                self._push(_error_event(self.session_id, self.failure))
                return

    def _push(self, item: Any) -> None:
        self._call(self._queue.put_nowait, item)

    def _call(self, fn: Any, *args: Any) -> None:
        # RuntimeError: the event loop is gone (the server exited); nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    # -- response side -------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[list[Event]]:
        """The turn's events, in order, grouped as they are waiting (one write each when the client
        lags behind, as under load); an empty batch now and then while nothing happens (keep-alive)."""
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout=self._patience())
            except TimeoutError:
                if self._past_report_deadline():
                    self.failure = ServiceUnavailable(
                        f"the server is shutting down and this turn did not finish in time; reload session "
                        f"{self.session_id!r} to see whether it was saved before sending the message again",
                        code="shutting_down")
                    yield [_error_event(self.session_id, self.failure)]
                    return
                yield []
                continue
            batch: list[Event] = []
            while item is not _END:
                batch.append(item)
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                yield batch
            if item is _END:
                return

    def _patience(self) -> float:
        deadline = self._lifecycle.report_deadline()
        if deadline is None:
            return KEEPALIVE_S
        return max(0.05, min(KEEPALIVE_S, deadline - time.monotonic()))

    def _past_report_deadline(self) -> bool:
        deadline = self._lifecycle.report_deadline()
        return deadline is not None and time.monotonic() >= deadline


def _shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable("the server is shutting down; retry on another instance or in a moment",
                              code="shutting_down")


def _error_event(session_id: str, exc: BaseException) -> Event:
    mapping, body = describe(exc)
    error = body["error"]
    return error_event(session_id, type(exc).__name__, scrub(error["message"]), code=error["code"],
                       status=mapping.status)
