"""Deterministic message text: distinct ~600-character chunks of English-like prose.

Every text is a pure function of (session id, position), so the main process and the
throughput workers generate the same conversation without sharing state, and a loaded
session can be checked against what was written. The vocabulary is plain English so pglz
compresses a whole-document store about as much as it would real chat (roughly 2:1).

A text is a window into one megabyte of prose generated once per process, at an offset
hashed from (session, position): a few microseconds per text, so a throughput client can
make its texts between turns without the harness showing up in the floor's figures. pglz
and zlib look back only 4 kB and 32 kB, so windows of one buffer compress like fresh prose.
"""

from __future__ import annotations

import random
import zlib

TARGET_CHARS = 600

Message = tuple[str, str]  # (kind, text) with kind "human" or "ai"

_WORDS = """
the a an and or but so because if when while after before then also only just still even
we you they it this that these those our your their its my his her some many few each every
session message database server client table index page row column record value key lock
agent model engine tool task plan step turn reply question answer history context memory
write read save load list update insert delete commit flush replay backup restore query
fast slow small large long short early late simple careful durable steady quiet busy
people team user customer engineer operator reviewer owner friend student teacher doctor
day night week month morning evening hour minute moment year season spring winter
city river mountain garden kitchen office station library market harbour village road
make take give keep find show tell ask try leave call bring hold turn move work wait
think know see want need like mean seem help start stop open close begin finish follow
good new old great high low clear bright dark warm cold near far other same different
about above across along around between through under without within toward against
number problem reason result example system process method change point place part way
""".split()  # noqa: SIM905 - a word list reads better as prose


def text(session_id: str, position: int) -> str:
    """The text of message ``position`` in session ``session_id`` (exactly 600 characters)."""
    # The header makes every message distinct even where two windows overlap.
    header = f"Message {position} of {session_id[:8]}: "
    offset = zlib.crc32(f"{session_id}:{position}".encode()) % (len(_PROSE) - 2 * TARGET_CHARS)
    offset = _PROSE.index(" ", offset) + 1  # start on a word
    return header + _PROSE[offset : offset + TARGET_CHARS - len(header)]


def kind(position: int) -> str:
    """Conversations alternate: even positions are the human's, odd ones the AI's."""
    return "human" if position % 2 == 0 else "ai"


def messages(session_id: str, start: int, count: int) -> list[Message]:
    """``count`` consecutive messages of a session, starting at ``start``."""
    return [(kind(p), text(session_id, p)) for p in range(start, start + count)]


def _sentence(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(6, 16))
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice(".....?!")


def _prose(size: int) -> str:
    rng = random.Random(20240607)
    parts: list[str] = []
    length = 0
    while length < size:
        parts.append(_sentence(rng))
        length += len(parts[-1]) + 1
    return " ".join(parts)


_PROSE = _prose(1 << 20)
