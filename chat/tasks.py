"""Stopping background tasks for sure."""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_SECS = 0.1  # a task still running this long after a cancel is cancelled again


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel the task and wait until it has ended; its error, if it ended by one, is raised.

    A task that runs on after cancel() is cancelled again: a library may turn a cancellation
    into an error of its own (a stopping server once waited for ever on a loop of ours that
    retries after RedisError, parked in its sleep with the cancellation spent)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECS)
    if not task.cancelled():
        task.result()
