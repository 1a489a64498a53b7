"""A small thread-safe LRU map, bounded by entry count.

The engine's state cache and the outage store's known sessions use it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class BoundedLRU(Generic[V]):
    """Session id -> value, the least recently used dropped beyond ``capacity`` (0: keeps nothing)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: V | None) -> None:
        """Remember ``value`` for ``key``; None forgets it."""
        with self._lock:
            if value is None:
                self._items.pop(key, None)
                return
            if self.capacity <= 0:
                return
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
