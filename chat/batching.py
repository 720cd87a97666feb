"""Coalescing writes: many callers each await their own write, the database sees one bulk call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


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
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
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
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for _, outcome in self._pending:
            outcome.cancel()
        self._pending.clear()
