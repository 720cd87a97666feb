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
