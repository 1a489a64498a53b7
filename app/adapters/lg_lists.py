"""List channels as appends: which elements of a LangGraph list channel a checkpoint really adds.

A channel such as ``messages`` holds the whole list at every checkpoint. The saver remembers,
per (thread, namespace, channel), the last version it wrote or read: the segments that describe
it in ``isotope_lg_items`` and a *pristine* copy of every element, one nobody else holds (fresh
from decoding, or copied with Isotope's :func:`app.store.delta.snapshot`, which copies every
mutable container and shares immutable leaves). A new value is compared with those copies
element by element (a C-level ``==`` that short-circuits on shared strings, and still catches an
in-place edit); only the elements after the common prefix are written.

The same copies answer a read of a version this process already holds: the saver hands out fresh
copies of them instead of fetching and decoding every element again.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from app.store.delta import snapshot, view

Segment = list[int]  # [epoch, start, end): positions start..end-1 of that epoch

_IMMUTABLE = (str, int, float, bool, type(None), bytes)


def fresh(value: Any) -> Any:
    """A copy of ``value`` that shares nothing mutable with it."""
    if isinstance(value, BaseModel):
        copy = value.model_copy()
        fields = copy.__dict__
        for key, item in fields.items():
            if not isinstance(item, _IMMUTABLE):
                fields[key] = snapshot(item)
        return copy
    return snapshot(value)


@dataclass(slots=True)
class ListState:
    segments: list[Segment]
    pristine: list[Any]


@dataclass(slots=True)
class ListPlan:
    segments: list[Segment]
    epoch: int  # where the new elements go
    start: int  # position of the first new element
    new: list[Any]
    pristine: list[Any]


def common_prefix(pristine: list[Any], values: list[Any]) -> int:
    """How many leading elements of ``values`` equal the stored ones."""
    m = min(len(pristine), len(values))
    if [view(p) for p in pristine[:m]] == [view(v) for v in values[:m]]:
        return m
    k = 0
    while k < m and view(pristine[k]) == view(values[k]):
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

    def get(self, thread_id: str, ns: str, channel: str) -> ListState | None:
        with self._lock:
            states = self._threads.get(thread_id)
            if states is None:
                return None
            self._threads.move_to_end(thread_id)
            return states.get((ns, channel))

    def known(self, thread_id: str, ns: str) -> dict[str, list[Segment]]:
        """Segments of every list of (thread, ns) held here: a read need not fetch their elements."""
        with self._lock:
            states = self._threads.get(thread_id) or {}
            return {ch: st.segments for (n, ch), st in states.items() if n == ns}

    def plan(self, thread_id: str, ns: str, channel: str, values: list[Any], fresh_epoch: bool) -> ListPlan:
        state = self.get(thread_id, ns, channel)
        k = common_prefix(state.pristine, values) if state is not None else 0
        segments = cut(state.segments, k) if state is not None else []
        pristine = state.pristine[:k] if state is not None else []
        new = values[k:]
        pristine.extend(fresh(v) for v in new)
        truncated = state is not None and k < len(state.pristine)
        if not new:
            return ListPlan(segments, 0, k, [], pristine)
        if segments and segments[-1][2] == k and not truncated and not fresh_epoch:
            epoch = segments[-1][0]
            segments[-1] = [epoch, segments[-1][1], len(values)]
        else:
            epoch = new_epoch()
            segments.append([epoch, k, len(values)])
        return ListPlan(segments, epoch, k, new, pristine)

    def remember(self, thread_id: str, ns: str, channel: str, segments: list[Segment], pristine: list[Any]) -> None:
        with self._lock:
            states = self._threads.setdefault(thread_id, {})
            states[(ns, channel)] = ListState(segments, pristine)
            self._threads.move_to_end(thread_id)
            while len(self._threads) > self.capacity:
                self._threads.popitem(last=False)

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
