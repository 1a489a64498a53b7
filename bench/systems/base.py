"""The one interface every benchmarked system implements.

An adapter is constructed without I/O, then ``open()``-ed against its own database. The harness
owns the conversation: it hands each call the exact texts to persist, so every system stores the
same bytes and a load can be checked against what was written. Adapters are single-threaded;
concurrency comes from several adapter instances in several processes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from bench.corpus import Message


class Unavailable(Exception):
    """The system cannot run here (e.g. its module has not landed yet); the run goes on without it."""


class LoadMismatch(AssertionError):
    """A loaded session is not what was written: the system lost or changed a message."""


class System:
    """Base adapter. Subclasses override the operations; the defaults describe missing features."""

    name: ClassVar[str]
    label: ClassVar[str]
    # Shown in the listing table: which API (or which ad-hoc SQL) answered "the 50 most recent".
    # An instance may refine it after listing (LangGraph records how many checkpoints it fetched).
    listing_note: str = ""
    # Ad-hoc SQL for "the 50 most recently updated session ids" when the library has no API;
    # run by the harness on its own psycopg connection, with the limit as the only parameter.
    listing_sql: ClassVar[str | None] = None
    # Systems whose turn also produces the AI reply themselves (the engine) ignore ``ai``.
    writes_given_reply: ClassVar[bool] = True
    # A system whose turn runs framework code around its storage (LangGraph) appends, per turn,
    # the milliseconds spent inside its storage layer; None means the whole turn is storage.
    persist_ms: list[float] | None = None

    def __init__(self, url: str) -> None:
        self.url = url

    def open(self, create_schema: bool = True) -> None:
        """Connect; with ``create_schema`` also create tables (only one process does that)."""

    def close(self) -> None:
        """Release every connection."""

    def create(self, session_id: str, messages: list[Message]) -> None:
        """Persist a new session holding ``messages`` (untimed seeding, through the library's API)."""
        raise NotImplementedError

    def resume(self, session_id: str, history: int) -> None:
        """Pick up an existing session of ``history`` messages in a fresh adapter (untimed)."""

    def turn(self, session_id: str, human: str, ai: str) -> None:
        """The timed unit: persist one human and one AI message, durably."""
        raise NotImplementedError

    def load(self, session_id: str) -> Any:
        """The timed full-session load; returns the library's own representation."""
        raise NotImplementedError

    def summarize(self, loaded: Any) -> tuple[int, str]:
        """(number of messages, text of the last one) of a loaded session (untimed)."""
        raise NotImplementedError

    def list_recent(self, limit: int) -> list[str] | None:
        """Session ids, most recently updated first, through the library's API; None if it has none."""
        return None

    def verify(self, loaded: Any, count: int, last_text: str) -> None:
        """Raise LoadMismatch unless the loaded session has ``count`` messages ending in ``last_text``."""
        got_count, got_last = self.summarize(loaded)
        if got_count != count or (self.writes_given_reply and got_last != last_text):
            raise LoadMismatch(
                f"{self.name}: loaded {got_count} messages (expected {count}); "
                f"last message {'matches' if got_last == last_text else 'differs'}"
            )
