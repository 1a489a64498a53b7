"""List channels as appends: which elements of a LangGraph list channel a checkpoint really adds.

A channel such as ``messages`` holds the whole list at every checkpoint. The saver remembers,
per (thread, namespace, channel), the last version it wrote or read: the segments that describe
it in ``isotope_lg_items`` and a snapshot of every element (Isotope's own
:func:`app.store.state.message_snapshot`, which catches in-place edits). A new value is
compared with that snapshot element by element (a C-level ``==`` that short-circuits on shared
strings); only the elements after the common prefix are written.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from app.store.state import message_snapshot, view

Segment = list[int]  # [epoch, start, end): positions start..end-1 of that epoch


@dataclass(slots=True)
class ListState:
    segments: list[Segment]
    snaps: list[Any]


@dataclass(slots=True)
class ListPlan:
    segments: list[Segment]
    epoch: int | None  # where the new elements go (None: nothing new)
    start: int  # position of the first new element
    new: list[Any]
    snaps: list[Any]


def common_prefix(snaps: list[Any], values: list[Any]) -> int:
    """How many leading elements of ``values`` equal the snapshot."""
    m = min(len(snaps), len(values))
    if snaps[:m] == [view(v) for v in values[:m]]:
        return m
    k = 0
    while k < m and snaps[k] == view(values[k]):
        k += 1
    return k


def cut(segments: list[Segment], k: int) -> list[Segment]:
    """The segments of the first ``k`` elements."""
    out: list[Segment] = []
    for epoch, start, end in segments:
        if start >= k:
            break
        out.append([epoch, start, min(end, k)])
    return out


def new_epoch() -> int:
    return random.randint(1, 2**31 - 1)


class ListCache:
    """What this process last stored or loaded for each list channel, for the most recent threads."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._threads: OrderedDict[str, dict[tuple[str, str], ListState]] = OrderedDict()
        self._lock = threading.Lock()

    def _get(self, thread_id: str, ns: str, channel: str) -> ListState | None:
        with self._lock:
            states = self._threads.get(thread_id)
            if states is None:
                return None
            self._threads.move_to_end(thread_id)
            return states.get((ns, channel))

    def plan(self, thread_id: str, ns: str, channel: str, values: list[Any], fresh_epoch: bool) -> ListPlan:
        state = self._get(thread_id, ns, channel)
        k = common_prefix(state.snaps, values) if state is not None else 0
        segments = cut(state.segments, k) if state is not None else []
        snaps = state.snaps[:k] if state is not None else []
        new = values[k:]
        snaps.extend(message_snapshot(v) for v in new)
        if not new:
            return ListPlan(segments, None, k, [], snaps)
        truncated = state is not None and k < len(state.snaps)
        if segments and segments[-1][2] == k and not truncated and not fresh_epoch:
            epoch = segments[-1][0]
            segments[-1] = [epoch, segments[-1][1], len(values)]
        else:
            epoch = new_epoch()
            segments.append([epoch, k, len(values)])
        return ListPlan(segments, epoch, k, new, snaps)

    def remember(self, thread_id: str, ns: str, channel: str, segments: list[Segment], snaps: list[Any]) -> None:
        with self._lock:
            states = self._threads.setdefault(thread_id, {})
            states[(ns, channel)] = ListState(segments, snaps)
            self._threads.move_to_end(thread_id)
            while len(self._threads) > self.capacity:
                self._threads.popitem(last=False)

    def remember_loaded(self, thread_id: str, ns: str, lists: dict[str, tuple[list[Segment], list[Any]]]) -> None:
        for channel, (segments, values) in lists.items():
            self.remember(thread_id, ns, channel, segments, [message_snapshot(v) for v in values])

    def forget(self, thread_id: str, ns: str | None = None) -> None:
        """Drop a thread (or one of its namespaces): its rows changed behind the cache."""
        with self._lock:
            if ns is None:
                self._threads.pop(thread_id, None)
                return
            states = self._threads.get(thread_id)
            if states is not None:
                for key in [k for k in states if k[0] == ns]:
                    del states[key]
