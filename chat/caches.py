"""State read from the database and kept in memory until this process changes it.

The hot paths (a send, a typing event, a presence announcement) ask about state that rarely
changes, such as blocks. Each such cache is invalidated by the code in this process that
changes the state; another process's change is seen once that process broadcasts it (the
several-process deployment), or once the entry is pushed out.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class InvalidatedCache(Generic[K, V]):
    """Values loaded on first use and kept until invalidated, or until `max_entries` pushes
    out the least recently used one."""

    def __init__(self, load: Callable[[K], Awaitable[V]], max_entries: int) -> None:
        self._load = load
        self._max_entries = max_entries
        self._values: collections.OrderedDict[K, V] = collections.OrderedDict()
        # Bumped by every invalidation: a load that overlapped one may have read the state
        # before the change, so its value is returned but not kept.
        self._changes = 0

    async def get(self, key: K) -> V:
        """The value for key, from memory or loaded."""
        try:
            value = self._values[key]
        except KeyError:
            pass
        else:
            self._values.move_to_end(key)
            return value
        changes = self._changes
        value = await self._load(key)
        if changes == self._changes:
            self._values[key] = value
            if len(self._values) > self._max_entries:
                self._values.popitem(last=False)
        return value

    def invalidate(self, *keys: K) -> None:
        """Forget these keys' values: the state behind them changed (or is changing)."""
        self._changes += 1
        for key in keys:
            self._values.pop(key, None)
