"""Coalescing writes and reads: many callers each await their own write or read, the database
sees one bulk call."""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from chat.tasks import cancel_and_wait

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

# Keys per read_many call at most. SecantusDB's `$in` costs more per key the more keys it has
# (embedded, 5,000 users: 64 ids ~0.1-0.2 ms each, 400 ids ~0.6 ms each, 5,000 ids 23 s in
# all), so a storm is read in calls of this size, one after another.
MAX_READ_KEYS = 64


_EMPTY: frozenset[Any] = frozenset()


def shared_frozenset(items: Iterable[T]) -> frozenset[T]:
    """frozenset(items), but the one shared empty frozenset when there are none: CPython makes
    a new 216-byte empty one each time, and caches holding one per user (most users' blocks
    and presence audiences are empty) held thousands of them."""
    found = frozenset(items)
    return found if found else _EMPTY


class Coalescer(Generic[K, V]):
    """Runs `write_many` with everything written while the previous call was in flight.

    The first write goes out at once (no added latency when it is quiet); writes that arrive
    during a call are merged (a later value for a key replaces an earlier one) and go out
    together as soon as it returns. Each caller's `write` returns when the call that carried
    its value succeeded, or raises that call's exception. At most one call is in flight, so
    a burst (500 users going offline together) costs a few bulk writes instead of 500
    concurrent ones.
    """

    def __init__(self, write_many: Callable[[dict[K, V]], Awaitable[None]]) -> None:
        self._write_many = write_many
        self._pending: dict[K, V] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._runner: asyncio.Task[None] | None = None

    async def write(self, key: K, value: V) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[key] = value
        self._waiters.append(waiter)
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        await waiter

    def put(self, key: K, value: V) -> None:
        """Write without waiting: for what nobody needs to know has been stored (a failed
        call drops it)."""
        self._pending[key] = value
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, waiters = self._pending, self._waiters
                self._pending, self._waiters = {}, []
                try:
                    await self._write_many(batch)
                except asyncio.CancelledError:
                    for waiter in waiters:  # closing: their call will never finish
                        waiter.cancel()
                    raise
                except Exception as exc:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                else:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            self._runner = None

    async def close(self) -> None:
        """Stop: a call in flight is cancelled, and so is every caller still waiting."""
        runner, self._runner = self._runner, None
        await _cancel(runner)
        for waiter in self._waiters:
            waiter.cancel()
        self._pending.clear()
        self._waiters.clear()


R = TypeVar("R")


class GroupCommit(Generic[V, R]):
    """Runs `write_many` with every item submitted while the previous call was in flight:
    group commit. Unlike Coalescer, each item has its own outcome.

    The first item goes out at once (no added latency when it is quiet); items that arrive
    during a call go out together, in arrival order, in calls of at most `max_batch`, as soon
    as it returns. `write_many` returns one outcome per item, in order: a result, or an
    exception that fails that item alone; an exception it raises fails every item of the
    call. At most one call is in flight.
    """

    def __init__(
        self,
        write_many: Callable[[list[V]], Awaitable[list[R | Exception]]],
        max_batch: int,
    ) -> None:
        self._write_many = write_many
        self._max_batch = max_batch
        self._pending: list[tuple[V, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: V) -> R:
        """The item's outcome, once the call that carried it returned."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, outcome))
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        return await outcome

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                # An item whose caller gave up is still written: its outcome was asked for.
                try:
                    results = await self._write_many([item for item, _ in batch])
                except asyncio.CancelledError:
                    for _, outcome in batch:  # closing: their call will never finish
                        outcome.cancel()
                    raise
                except Exception as exc:
                    results = [exc] * len(batch)
                for (_, outcome), result in zip(batch, results, strict=True):
                    if outcome.done():
                        continue
                    if isinstance(result, Exception):
                        outcome.set_exception(result)
                    else:
                        outcome.set_result(result)
        finally:
            self._runner = None

    async def close(self) -> None:
        """Stop: a call in flight is cancelled, and so is every item still waiting."""
        runner, self._runner = self._runner, None
        await _cancel(runner)
        for _, outcome in self._pending:
            outcome.cancel()
        self._pending.clear()


class ReadBatcher(Generic[K, V]):
    """Runs `read_many` with every key asked for while the previous call was in flight.

    The read side of :class:`Coalescer`: a connect storm (500 clients each reading its
    session) costs a few `find({_id: {$in: [...]}})` instead of 500 concurrent `find_one`s.
    The first read goes out at once; keys asked for during a call go out together as soon as
    it returns (at most `max_keys` a call, the rest in the next), each key once however many
    callers wait for it. A caller gets its key's value, None when `read_many` left the key
    out, or that call's exception."""

    def __init__(
        self,
        read_many: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        max_keys: int = MAX_READ_KEYS,
    ) -> None:
        self._read_many = read_many
        self._max_keys = max_keys
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[V | None] = loop.create_future()
        self._waiting.setdefault(key, []).append(waiter)
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        return await waiter

    async def _run(self) -> None:
        try:
            while self._waiting:
                keys = list(itertools.islice(self._waiting, self._max_keys))
                batch = {key: self._waiting.pop(key) for key in keys}
                try:
                    found = await self._read_many(keys)
                except asyncio.CancelledError:
                    for waiters in batch.values():  # the loop is closing: no answer will come
                        for waiter in waiters:
                            waiter.cancel()
                    raise
                except Exception as exc:
                    for waiters in batch.values():
                        for waiter in waiters:
                            if not waiter.done():
                                waiter.set_exception(exc)
                else:
                    for key, waiters in batch.items():
                        value = found.get(key)
                        for waiter in waiters:
                            if not waiter.done():  # a caller that gave up is skipped
                                waiter.set_result(value)
        finally:
            self._runner = None


class CachedReads(Generic[K, V]):
    """Values loaded once and then answered from memory until this process changes them.

    Whoever changes a value here calls `forget` (or `update`) after storing the change; a
    load that was under way meanwhile is not kept (it may have read the old value). Changes
    made by other processes are not seen: a cache is only for values that change here (the
    several-process setup will broadcast these calls). At most `max_entries` are kept, the
    least recently read dropped first; None (not found) is never kept."""

    def __init__(self, load: Callable[[K], Awaitable[V | None]], max_entries: int) -> None:
        self._load = load
        self._max = max_entries
        self._values: collections.OrderedDict[K, V] = collections.OrderedDict()
        self._loading: collections.Counter[K] = collections.Counter()  # loads under way
        self._changed: set[K] = set()  # changed while loading: what was loaded may be old

    async def get(self, key: K) -> V | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
            return value
        self._loading[key] += 1
        try:
            value = await self._load(key)
        finally:
            self._loading[key] -= 1
            stale = key in self._changed
            if not self._loading[key]:
                del self._loading[key]
                self._changed.discard(key)
        if value is not None and not stale:
            self._values[key] = value
            if len(self._values) > self._max:
                self._values.popitem(last=False)
        return value

    def __contains__(self, key: object) -> bool:
        """True when get(key) would answer from memory."""
        return key in self._values

    def forget(self, key: K) -> None:
        """The value changed: load it again next time."""
        self._values.pop(key, None)
        if key in self._loading:
            self._changed.add(key)

    def update(self, key: K, change: Callable[[V], V]) -> None:
        """The value changed in a known way: apply `change` to the kept value, if any."""
        value = self._values.get(key)
        if value is not None:
            self._values[key] = change(value)
        if key in self._loading:
            self._changed.add(key)

    def __len__(self) -> int:
        return len(self._values)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a batch runner and wait until it has ended."""
    await cancel_and_wait(task)
