"""Background tasks stop for sure, even one that turns a cancellation into an error it handles."""

from __future__ import annotations

import asyncio

import pytest

from chat.tasks import cancel_and_wait


async def test_a_task_that_swallows_one_cancellation_is_stopped_all_the_same() -> None:
    handled = []

    async def retries_on_its_error() -> None:
        while True:  # as a loop of ours retrying after a RedisError that was a cancellation
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if handled:
                    raise
                handled.append(True)

    task = asyncio.create_task(retries_on_its_error())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert handled and task.cancelled()


async def test_the_error_a_task_ended_with_is_raised() -> None:
    async def fails_when_stopped() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise ValueError("while stopping") from None

    task = asyncio.create_task(fails_when_stopped())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="while stopping"):
        await cancel_and_wait(task)
    await cancel_and_wait(None)
